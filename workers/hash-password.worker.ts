/**
 * Hashes a password with scrypt (RFC 7914) into a self-describing string:
 * `scrypt$<N>$<r>$<p>$<salt base64>$<key base64>`, so verify-password.worker.ts reads the
 * cost from the hash itself and the parameters can be raised later without a migration.
 */
import { randomBytes, scryptSync } from 'node:crypto'

/**
 * N = 2^14, r = 8, p = 1: the interactive-login parameters of RFC 7914 section 2 and OWASP's
 * password storage cheat sheet, about 16 MiB (128 * N * r bytes) and tens of ms per hash.
 */
const N = 16384
const R = 8
const P = 1
const SALT_BYTES = 16
const KEY_BYTES = 32

export interface HashPasswordInput {
  password: string
}

export default async function hashPassword ({ password }: HashPasswordInput): Promise<string> {
  if (typeof password !== 'string') throw new TypeError('password must be a string')
  const salt = randomBytes(SALT_BYTES)
  // Synchronous on purpose: this already runs on a worker thread, and the async form would
  // hand the work to libuv's small shared threadpool, where it would queue in front of the
  // main thread's file and DNS work. NFC so the same password typed on systems that compose
  // accents differently gives the same bytes (RFC 8265 OpaqueString).
  const key = scryptSync(password.normalize('NFC'), salt, KEY_BYTES, { N, r: R, p: P })
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`
}
