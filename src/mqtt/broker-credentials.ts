/**
 * The embedded broker's accounts: generated once and kept in DATA_DIR/mqtt-credentials.json
 * (mode 0600), the way the embedded PostgreSQL keeps its password. Without them any local
 * process could publish hints for any session, or subscribe to `llm/#` and read every user's
 * prompts and replies. An LLM worker run beside `npm start` takes the worker account's
 * password from this file (README, "Running a worker").
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BROKER_USERS, type BrokerRole } from './broker-acl.js'

export type BrokerCredentials = Readonly<Record<BrokerRole, { readonly username: string, readonly password: string }>>

export const CREDENTIALS_FILE = 'mqtt-credentials.json'

function generate (): BrokerCredentials {
  const account = (role: BrokerRole): { username: string, password: string } => ({ username: BROKER_USERS[role], password: randomBytes(18).toString('base64url') })
  return { gateway: account('gateway'), worker: account('worker') }
}

function wellFormed (value: unknown): value is BrokerCredentials {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, { username?: unknown, password?: unknown } | undefined>
  return (['gateway', 'worker'] as const).every((role) => typeof v[role]?.username === 'string' && typeof v[role]?.password === 'string' && (v[role]?.password as string).length >= 16)
}

/** The accounts in `dataDir`, created on first use; a damaged file is replaced (the broker is ours alone). */
export function loadBrokerCredentials (dataDir: string): { credentials: BrokerCredentials, file: string } {
  const file = join(dataDir, CREDENTIALS_FILE)
  if (existsSync(file)) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'))
      if (wellFormed(parsed)) return { credentials: parsed, file }
    } catch { /* replaced below */ }
  }
  const credentials = generate()
  writeFileSync(file, JSON.stringify(credentials, null, 2) + '\n', { mode: 0o600 })
  return { credentials, file }
}

/** The role whose username and password these are, or null; constant time in the password. */
export function roleOf (credentials: BrokerCredentials, username: string | undefined, password: Buffer | undefined): BrokerRole | null {
  if (username === undefined || password === undefined) return null
  for (const role of ['gateway', 'worker'] as const) {
    const account = credentials[role]
    if (account.username !== username) continue
    const expected = Buffer.from(account.password)
    return password.length === expected.length && timingSafeEqual(password, expected) ? role : null
  }
  return null
}

/** `mqtt://user:password@host:port` for one account. */
export function urlWithAccount (url: string, account: { username: string, password: string }): string {
  const u = new URL(url)
  u.username = encodeURIComponent(account.username)
  u.password = encodeURIComponent(account.password)
  return u.toString()
}
