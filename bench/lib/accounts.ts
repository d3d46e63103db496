/**
 * Bench users, made through the public API before anything is measured: register, log in (so
 * the password hash and the token are the gateway's own), then create the user's sessions.
 * Set-up only, so plain fetch is fine here; the load itself goes through bare-socket clients.
 * The gateway must run CHAT_MODE=persistent.
 */
import { randomBytes } from 'node:crypto'

export interface Account {
  readonly username: string
  readonly password: string
  readonly userId: string
  readonly token: string
  /** Session UUIDs owned by the user, as the gateway returned them. */
  readonly sessionIds: string[]
}

export interface AccountOptions {
  readonly username: string
  readonly sessions: number
  readonly sessionTitle: (i: number) => string
  /** Sessions created at once; enough to be quick, few enough never to queue on the gateway's pool of 10. */
  readonly batch?: number
  /** Per request. */
  readonly timeoutMs?: number
}

async function post (port: number, path: string, body: unknown, timeoutMs: number, token?: string): Promise<{ status: number, json: Record<string, unknown> }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) })
  const text = await res.text()
  let json: Record<string, unknown>
  try { json = JSON.parse(text) as Record<string, unknown> } catch { json = { raw: text.slice(0, 200) } }
  return { status: res.status, json }
}

function expectStatus (what: string, got: { status: number, json: unknown }, want: number): void {
  if (got.status !== want) throw new Error(`${what}: expected ${want}, got ${got.status} ${JSON.stringify(got.json).slice(0, 300)}`)
}

/** One user with `o.sessions` sessions on the gateway at `port`. */
export async function createAccount (port: number, o: AccountOptions): Promise<Account> {
  const batch = o.batch ?? 16
  const timeoutMs = o.timeoutMs ?? 10_000
  const username = o.username
  const password = randomBytes(12).toString('hex')
  expectStatus('POST /api/auth/register', await post(port, '/api/auth/register', { username, password }, timeoutMs), 201)
  const login = await post(port, '/api/auth/login', { username, password }, timeoutMs)
  expectStatus('POST /api/auth/login', login, 200)
  const token = login.json.token
  const userId = (login.json.user as { id?: unknown } | undefined)?.id
  if (typeof token !== 'string' || token === '' || typeof userId !== 'string') throw new Error('POST /api/auth/login: no token or user.id in the answer')

  const sessionIds: string[] = []
  for (let i = 0; i < o.sessions; i += batch) {
    const made = await Promise.all(Array.from({ length: Math.min(batch, o.sessions - i) }, async (_, j) => {
      const r = await post(port, '/api/chatbot/sessions', { title: o.sessionTitle(i + j) }, timeoutMs, token)
      expectStatus('POST /api/chatbot/sessions', r, 201)
      if (typeof r.json.id !== 'string') throw new Error('POST /api/chatbot/sessions: no id in the answer')
      return r.json.id
    }))
    sessionIds.push(...made)
  }
  return { username, password, userId, token, sessionIds }
}
