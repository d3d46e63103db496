/**
 * Hashes a password with scrypt (RFC 7914) into a self-describing string:
 * `scrypt$<N>$<r>$<p>$<salt base64>$<key base64>`, so verify-password.worker.ts reads the
 * cost from the hash itself and the parameters can be raised later without a migration.
 */
import { randomBytes, scryptSync } from 'node:crypto'

/**
 * N = 2^17, r = 8, p = 1: OWASP's password storage cheat sheet's floor for scrypt (RFC 7914
 * section 2's 2^14 is its 2009 interactive-login figure). 128 * N * r = 128 MiB of memory and
 * about 0.3 s of one thread per hash here. PASSWORD_HASH_COST sets log2(N); tests lower it.
 */
export const DEFAULT_COST = 17
const R = 8
const P = 1
const SALT_BYTES = 16
const KEY_BYTES = 32
/** Node refuses scrypt above `maxmem` (32 MiB by default); this leaves room for the 128 * N * r it needs. */
const MEM_SLACK_BYTES = 16 * 2 ** 20

export interface HashPasswordInput {
  password: string
  /** log2(N); DEFAULT_COST when absent. */
  cost?: number
}

export default async function hashPassword ({ password, cost = DEFAULT_COST }: HashPasswordInput): Promise<string> {
  if (typeof password !== 'string') throw new TypeError('password must be a string')
  if (!Number.isInteger(cost) || cost < 10 || cost > 18) throw new TypeError(`cost must be a whole number from 10 to 18, got ${cost}`)
  const N = 2 ** cost
  const salt = randomBytes(SALT_BYTES)
  // Synchronous on purpose: this already runs on a worker thread, and the async form would
  // hand the work to libuv's small shared threadpool, where it would queue in front of the
  // main thread's file and DNS work. NFC so the same password typed on systems that compose
  // accents differently gives the same bytes (RFC 8265 OpaqueString).
  const key = scryptSync(password.normalize('NFC'), salt, KEY_BYTES, { N, r: R, p: P, maxmem: 128 * N * R + MEM_SLACK_BYTES })
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`
}
