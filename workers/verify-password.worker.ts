/**
 * Checks a password against a hash made by hash-password.worker.ts. Answers false, never
 * throws, for anything that is not a well-formed hash in that format: a damaged row must read
 * as "wrong password", not as a 500.
 */
import { scryptSync, timingSafeEqual } from 'node:crypto'

export interface VerifyPasswordInput {
  password: string
  hash: string
}

/** Bounds on the cost read from a hash, so a tampered row cannot make one login take minutes or gigabytes. */
const MAX_N = 2 ** 20
const MAX_R = 32
const MAX_P = 16
/**
 * scrypt needs 128 * N * r bytes; Node refuses above `maxmem` (32 MiB by default). 288 MiB
 * takes the highest PASSWORD_HASH_COST (2^18 with r = 8: 256 MiB) with room to spare.
 */
const MAX_MEM_BYTES = 288 * 2 ** 20
const MIN_KEY_BYTES = 16
const MAX_KEY_BYTES = 64

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
const DECIMAL = /^[1-9][0-9]{0,9}$/

export default async function verifyPassword ({ password, hash }: VerifyPasswordInput): Promise<boolean> {
  if (typeof password !== 'string' || typeof hash !== 'string') return false
  const parts = hash.split('$')
  if (parts.length !== 6) return false
  const [scheme, nText, rText, pText, saltText, keyText] = parts as [string, string, string, string, string, string]
  if (scheme !== 'scrypt') return false
  if (!DECIMAL.test(nText) || !DECIMAL.test(rText) || !DECIMAL.test(pText)) return false
  const N = Number(nText)
  const r = Number(rText)
  const p = Number(pText)
  // N must be a power of two above 1 (RFC 7914 section 2).
  if (N < 2 || N > MAX_N || (N & (N - 1)) !== 0 || r > MAX_R || p > MAX_P) return false
  if (!BASE64.test(saltText) || !BASE64.test(keyText)) return false
  const salt = Buffer.from(saltText, 'base64')
  const expected = Buffer.from(keyText, 'base64')
  if (salt.length === 0 || expected.length < MIN_KEY_BYTES || expected.length > MAX_KEY_BYTES) return false
  let actual: Buffer
  try {
    // Synchronous on purpose; see hash-password.worker.ts.
    actual = scryptSync(password.normalize('NFC'), salt, expected.length, { N, r, p, maxmem: MAX_MEM_BYTES })
  } catch {
    return false
  }
  // Constant time, so the time taken says nothing about how many leading bytes matched.
  return timingSafeEqual(actual, expected)
}
