/**
 * The set-up of bench:loop, done once before anything is measured: users registered and logged
 * in through the public API (so their hashes are the gateway's own), one session each, and a
 * long history per session written straight into chat_messages with pg (thousands of rows in
 * seconds, where chatting them in would take minutes). Deterministic text from a seeded PRNG,
 * so every run tokenizes the same kind of prose.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createAccount } from '../lib/accounts.js'

export interface LoopUser {
  readonly username: string
  readonly password: string
  readonly userId: string
  readonly token: string
  readonly sessionId: string
}

export interface SeedOptions {
  readonly port: number
  readonly databaseUrl: string
  readonly users: number
  /** Messages written into each session's history, alternating user and assistant. */
  readonly historyMessages: number
  readonly messageChars: number
}

/** Users made at once during set-up: a few per pool thread, so no login waits out a deadline. */
const BATCH = 4
/** Per request: a login's scrypt may wait behind the others' on the pool's threads. */
const TIMEOUT_MS = 30_000

async function makeUser (port: number, prefix: string, i: number): Promise<LoopUser> {
  const a = await createAccount(port, { username: `${prefix}_${i}`, sessions: 1, sessionTitle: () => `loop ${i}`, timeoutMs: TIMEOUT_MS })
  return { username: a.username, password: a.password, userId: a.userId, token: a.token, sessionId: a.sessionIds[0] as string }
}

export async function seedUsers (o: SeedOptions): Promise<{ users: LoopUser[], rows: number }> {
  const prefix = `loop_${randomBytes(3).toString('hex')}`
  const users: LoopUser[] = []
  for (let i = 0; i < o.users; i += BATCH) {
    const n = Math.min(BATCH, o.users - i)
    users.push(...await Promise.all(Array.from({ length: n }, async (_, j) => await makeUser(o.port, prefix, i + j))))
  }
  const client = new pg.Client({ connectionString: o.databaseUrl, connectionTimeoutMillis: 5000, query_timeout: 60_000, application_name: 'tether-bench-seed' })
  await client.connect()
  let rows = 0
  try {
    const rnd = prng(0x10095eed)
    for (const user of users) {
      const roles = Array.from({ length: o.historyMessages }, (_, k) => (k % 2 === 0 ? 'user' : 'assistant'))
      const contents = roles.map(() => prose(rnd, o.messageChars))
      // One statement per session; unnest keeps the array order, so seq follows it.
      const r = await client.query(
        'INSERT INTO chat_messages (session_id, role, content) SELECT $1::uuid, r, c FROM unnest($2::text[], $3::text[]) AS t(r, c)',
        [user.sessionId, roles, contents])
      rows += r.rowCount ?? 0
    }
  } finally {
    await client.end().catch(() => undefined)
  }
  return { users, rows }
}

/** A small seeded PRNG (LCG): the same prose on every run, no dependency. */
export function prng (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

const SYLLABLES = 'ka lo mi ter an pre stu dio ven ra sol mun tra el gor fi ne qua bri zen ox pal dur ith cor ba se tu vim por'.split(' ')

/**
 * `chars` characters of word-like text with sentences and punctuation: made-up words of one to
 * three syllables, so a byte-level BPE splits them into several tokens the way it does names
 * and rare words (about 4 characters a token), rather than one token per common word.
 */
export function prose (rnd: () => number, chars: number): string {
  const parts: string[] = []
  let length = 0
  let sentence = 0
  while (length < chars) {
    let word = ''
    const syllables = 1 + Math.floor(rnd() * 3)
    for (let k = 0; k < syllables; k++) word += SYLLABLES[Math.floor(rnd() * SYLLABLES.length)]
    if (sentence === 0) word = word.charAt(0).toUpperCase() + word.slice(1)
    sentence++
    const end = sentence > 6 && rnd() < 0.15
    if (end) sentence = 0
    const piece = end ? `${word}. ` : rnd() < 0.08 ? `${word}, ` : `${word} `
    parts.push(piece)
    length += piece.length
  }
  return parts.join('').slice(0, chars).trimEnd()
}
