/**
 * Bearer tokens: compact JWTs signed with HMAC-SHA256 (RFC 7519 / RFC 7515), so any JWT
 * library can read them. Verification accepts only alg HS256 (never "none", never an
 * algorithm the token names itself), compares signatures in constant time, and checks expiry.
 * Signing and verifying are microseconds of work: they stay on the event loop.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Clock } from '../clock.js'

export interface TokenClaims {
  userId: string
  username: string
  /** Epoch seconds. */
  expiresAt: number
}

export type Verified = { ok: true, claims: TokenClaims } | { ok: false, reason: 'malformed' | 'bad_signature' | 'expired' }

export interface Tokens {
  sign: (userId: string, username: string) => { token: string, expiresAt: Date }
  verify: (token: string) => Verified
}

const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url')

export function createTokens (options: { secret: string, ttlS: number, clock: Clock }): Tokens {
  const key = Buffer.from(options.secret, 'utf8')
  const mac = (data: string): Buffer => createHmac('sha256', key).update(data).digest()

  return {
    sign (userId, username) {
      const iat = Math.floor(options.clock.now() / 1000)
      const exp = iat + options.ttlS
      const payload = Buffer.from(JSON.stringify({ sub: userId, name: username, iat, exp })).toString('base64url')
      const body = `${HEADER}.${payload}`
      return { token: `${body}.${mac(body).toString('base64url')}`, expiresAt: new Date(exp * 1000) }
    },
    verify (token) {
      const parts = token.split('.')
      if (parts.length !== 3 || token.length > 4096) return { ok: false, reason: 'malformed' }
      const [header, payload, signature] = parts as [string, string, string]
      if (header !== HEADER) return { ok: false, reason: 'malformed' }
      // Compare the encoded text, not the decoded bytes: base64url decoding skips stray
      // characters and ignores the last character's spare bits, so several spellings of one
      // signature would verify (RFC 7515 allows exactly one).
      const expected = Buffer.from(mac(`${header}.${payload}`).toString('base64url'))
      const given = Buffer.from(signature)
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'bad_signature' }
      let claims: { sub?: unknown, name?: unknown, exp?: unknown }
      try { claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) } catch { return { ok: false, reason: 'malformed' } }
      if (typeof claims.sub !== 'string' || typeof claims.name !== 'string' || typeof claims.exp !== 'number') return { ok: false, reason: 'malformed' }
      if (claims.exp * 1000 <= options.clock.now()) return { ok: false, reason: 'expired' }
      return { ok: true, claims: { userId: claims.sub, username: claims.name, expiresAt: claims.exp } }
    }
  }
}

/** The token from `Authorization: Bearer <token>`, or '' when absent or another scheme. */
export function bearerToken (authorization: string): string {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
  return m === null ? '' : m[1] as string
}
