/**
 * The account the persistent-mode load runs as, made through the public API before any
 * measuring: register, log in, create the sessions. Set-up only, so plain fetch is fine here;
 * the load itself goes through the bare-socket client.
 */
import { randomBytes } from 'node:crypto'

export interface BenchAccount {
  readonly username: string
  readonly userId: string
  readonly token: string
  /** Session UUIDs owned by the user, as the gateway returned them. */
  readonly sessionIds: string[]
}

/** Sessions created at once; enough to be quick, few enough not to queue on the pool. */
const BATCH = 16
const TIMEOUT_MS = 10_000

async function call (port: number, path: string, body: unknown, token?: string): Promise<{ status: number, json: Record<string, unknown> }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT_MS)
  })
  const text = await res.text()
  let json: Record<string, unknown> = {}
  try { json = JSON.parse(text) as Record<string, unknown> } catch { json = { raw: text.slice(0, 200) } }
  return { status: res.status, json }
}

function expectStatus (what: string, got: { status: number, json: unknown }, want: number): void {
  if (got.status !== want) throw new Error(`${what}: expected ${want}, got ${got.status} ${JSON.stringify(got.json).slice(0, 300)}`)
}

/** One user with `sessions` sessions on the gateway at `port` (which must run CHAT_MODE=persistent). */
export async function createBenchAccount (port: number, sessions: number): Promise<BenchAccount> {
  const username = `bench_${randomBytes(4).toString('hex')}`
  const password = randomBytes(12).toString('hex')
  expectStatus('POST /api/auth/register', await call(port, '/api/auth/register', { username, password }), 201)
  const login = await call(port, '/api/auth/login', { username, password })
  expectStatus('POST /api/auth/login', login, 200)
  const token = login.json.token
  const userId = (login.json.user as { id?: unknown } | undefined)?.id
  if (typeof token !== 'string' || token === '' || typeof userId !== 'string') throw new Error('POST /api/auth/login: no token or user.id in the answer')

  const sessionIds: string[] = []
  for (let i = 0; i < sessions; i += BATCH) {
    const n = Math.min(BATCH, sessions - i)
    const made = await Promise.all(Array.from({ length: n }, async (_, j) => {
      const r = await call(port, '/api/chatbot/sessions', { title: `bench ${i + j}` }, token)
      expectStatus('POST /api/chatbot/sessions', r, 201)
      if (typeof r.json.id !== 'string') throw new Error('POST /api/chatbot/sessions: no id in the answer')
      return r.json.id
    }))
    sessionIds.push(...made)
  }
  return { username, userId, token, sessionIds }
}
