/**
 * The bench user, made through the public API before anything is measured: register, log in,
 * then create the sessions its sockets join. Set-up only, so plain fetch is fine.
 */
import { randomBytes } from 'node:crypto'

export interface WsBenchAccount {
  readonly username: string
  readonly token: string
  readonly sessionIds: string[]
}

/** Session creations in flight at once: quick, and never a queue on the gateway's pool of 10. */
const BATCH = 16
const TIMEOUT_MS = 10_000

async function post (port: number, path: string, body: unknown, token?: string): Promise<{ status: number, json: Record<string, unknown> }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT_MS) })
  const text = await res.text()
  let json: Record<string, unknown>
  try { json = JSON.parse(text) as Record<string, unknown> } catch { json = { raw: text.slice(0, 200) } }
  return { status: res.status, json }
}

function expect (what: string, got: { status: number, json: unknown }, want: number): void {
  if (got.status !== want) throw new Error(`${what}: expected ${want}, got ${got.status} ${JSON.stringify(got.json).slice(0, 300)}`)
}

export async function createWsBenchAccount (port: number, sessions: number): Promise<WsBenchAccount> {
  const username = `benchws_${randomBytes(4).toString('hex')}`
  const password = randomBytes(12).toString('hex')
  expect('POST /api/auth/register', await post(port, '/api/auth/register', { username, password }), 201)
  const login = await post(port, '/api/auth/login', { username, password })
  expect('POST /api/auth/login', login, 200)
  const token = login.json.token
  if (typeof token !== 'string' || token === '') throw new Error('POST /api/auth/login: no token in the answer')
  const sessionIds: string[] = []
  for (let i = 0; i < sessions; i += BATCH) {
    const made = await Promise.all(Array.from({ length: Math.min(BATCH, sessions - i) }, async (_, j) => {
      const r = await post(port, '/api/chatbot/sessions', { title: `bench ws ${i + j}` }, token)
      expect('POST /api/chatbot/sessions', r, 201)
      if (typeof r.json.id !== 'string') throw new Error('POST /api/chatbot/sessions: no id in the answer')
      return r.json.id
    }))
    sessionIds.push(...made)
  }
  return { username, token, sessionIds }
}
