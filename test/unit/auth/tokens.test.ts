import t from 'tap'
import { bearerToken, createTokens, type Tokens } from '../../../src/auth/tokens.js'
import type { Clock } from '../../../src/clock.js'

const SECRET = 'unit-test-secret-unit-test-secret-0123456789'
// A whole second, so iat and exp land on exact second boundaries.
const T0 = 1_700_000_000_000

/** A clock that only tells the time; tokens never set timers. */
function clockAt (ms: number): Clock & { ms: number } {
  const clock = {
    ms,
    now: () => clock.ms,
    setTimeout: () => { throw new Error('tokens must not set timers') },
    clearTimeout: () => {}
  }
  return clock
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

function tokensAt (ms: number, ttlS = 60, secret = SECRET): { tokens: Tokens, clock: Clock & { ms: number } } {
  const clock = clockAt(ms)
  return { tokens: createTokens({ secret, ttlS, clock }), clock }
}

t.test('a signed token verifies to the same user, name and expiry', async (t) => {
  const { tokens } = tokensAt(T0, 3600)
  const { token, expiresAt } = tokens.sign('3b241101-e2bb-4255-8caf-4136c566a962', 'alice')
  t.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'compact JWS: three base64url parts')
  t.equal(expiresAt.getTime(), T0 + 3600 * 1000, 'expiresAt is now + ttl')
  t.same(tokens.verify(token), {
    ok: true,
    claims: { userId: '3b241101-e2bb-4255-8caf-4136c566a962', username: 'alice', expiresAt: T0 / 1000 + 3600 }
  })
})

t.test('the header names HS256 and the payload carries sub, name, iat and exp in seconds', async (t) => {
  const { tokens } = tokensAt(T0 + 999, 60)
  const [header, payload] = tokens.sign('u1', 'bob').token.split('.') as [string, string, string]
  t.same(JSON.parse(Buffer.from(header, 'base64url').toString()), { alg: 'HS256', typ: 'JWT' })
  t.same(JSON.parse(Buffer.from(payload, 'base64url').toString()), { sub: 'u1', name: 'bob', iat: T0 / 1000, exp: T0 / 1000 + 60 })
})

t.test('a token is valid until the last millisecond before exp and expired at exp', async (t) => {
  const { tokens, clock } = tokensAt(T0, 60)
  const { token } = tokens.sign('u1', 'alice')
  clock.ms = T0 + 60_000 - 1
  t.equal(tokens.verify(token).ok, true, 'one millisecond before exp')
  clock.ms = T0 + 60_000
  t.same(tokens.verify(token), { ok: false, reason: 'expired' }, 'at exp')
  clock.ms = T0 + 3_600_000
  t.same(tokens.verify(token), { ok: false, reason: 'expired' }, 'long after exp')
})

t.test('a token signed with another secret is a bad signature', async (t) => {
  const { tokens } = tokensAt(T0)
  const { tokens: other } = tokensAt(T0, 60, 'another-secret-another-secret-0123456789')
  t.same(tokens.verify(other.sign('u1', 'alice').token), { ok: false, reason: 'bad_signature' })
})

t.test('a tampered payload is a bad signature', async (t) => {
  const { tokens } = tokensAt(T0)
  const [header, payload, signature] = tokens.sign('u1', 'alice').token.split('.') as [string, string, string]
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
  const forged = b64({ ...claims, sub: 'u2', name: 'mallory' })
  t.same(tokens.verify(`${header}.${forged}.${signature}`), { ok: false, reason: 'bad_signature' })
  const later = b64({ ...claims, exp: claims.exp + 86_400 })
  t.same(tokens.verify(`${header}.${later}.${signature}`), { ok: false, reason: 'bad_signature' }, 'extending exp')
})

t.test('a tampered signature is a bad signature', async (t) => {
  const { tokens } = tokensAt(T0)
  const [header, payload, signature] = tokens.sign('u1', 'alice').token.split('.') as [string, string, string]
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1)
  t.same(tokens.verify(`${header}.${payload}.${flipped}`), { ok: false, reason: 'bad_signature' })
  t.same(tokens.verify(`${header}.${payload}.`), { ok: false, reason: 'bad_signature' }, 'empty signature')
  t.same(tokens.verify(`${header}.${payload}.${signature.slice(0, 20)}`), { ok: false, reason: 'bad_signature' }, 'truncated signature')
})

// RFC 7515 2: base64url "with all trailing '=' characters omitted ... and without the
// inclusion of any line breaks, whitespace, or other additional characters". Node's
// base64url decoder skips characters outside the alphabet and ignores the unused low bits of
// the last character, so without a strict check many different strings carry one signature.
t.test('a signature in any encoding other than the canonical one is refused', async (t) => {
  const { tokens } = tokensAt(T0)
  const token = tokens.sign('u1', 'alice').token
  const [header, payload, signature] = token.split('.') as [string, string, string]
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const last = alphabet.indexOf(signature.at(-1) as string)
  // 32 bytes in 43 characters: the last character carries 4 bits and 2 unused ones.
  const sameBits = alphabet[last ^ 1] as string
  const variants = {
    'padding appended': `${signature}=`,
    'a character outside the alphabet appended': `${signature}!`,
    'a character outside the alphabet inside': `${signature.slice(0, 10)}*${signature.slice(10)}`,
    'unused low bits of the last character changed': signature.slice(0, -1) + sameBits
  }
  for (const [what, variant] of Object.entries(variants)) {
    t.not(variant, signature)
    t.equal(tokens.verify(`${header}.${payload}.${variant}`).ok, false, what)
  }
  t.equal(tokens.verify(token).ok, true, 'the canonical token still verifies')
})

t.test('a header with alg none is malformed, even with a valid HMAC over it', async (t) => {
  const { tokens } = tokensAt(T0)
  const payload = b64({ sub: 'u1', name: 'alice', iat: T0 / 1000, exp: T0 / 1000 + 60 })
  const none = b64({ alg: 'none', typ: 'JWT' })
  t.same(tokens.verify(`${none}.${payload}.`), { ok: false, reason: 'malformed' })
  t.same(tokens.verify(`${b64({ alg: 'HS512', typ: 'JWT' })}.${payload}.abc`), { ok: false, reason: 'malformed' }, 'another algorithm')
  t.same(tokens.verify(`${b64({ typ: 'JWT', alg: 'HS256' })}.${payload}.abc`), { ok: false, reason: 'malformed' }, 'the same header spelled differently')
})

t.test('strings that are not three dot-separated parts are malformed', async (t) => {
  const { tokens } = tokensAt(T0)
  for (const bad of ['', 'abc', 'a.b', 'a.b.c.d', '...', 'a.b.c'.repeat(1000)]) {
    t.equal(tokens.verify(bad).ok, false, JSON.stringify(bad.slice(0, 20)))
  }
  t.same(tokens.verify('abc'), { ok: false, reason: 'malformed' })
  t.same(tokens.verify('a.b.c.d'), { ok: false, reason: 'malformed' })
})

t.test('a token longer than 4096 characters is malformed before any HMAC', async (t) => {
  const { tokens } = tokensAt(T0)
  const { token } = tokens.sign('u1', 'x'.repeat(4000))
  t.ok(token.length > 4096)
  t.same(tokens.verify(token), { ok: false, reason: 'malformed' })
})

t.test('a correctly signed payload with missing or mistyped claims is malformed', async (t) => {
  const { tokens } = tokensAt(T0)
  const [header] = tokens.sign('u1', 'alice').token.split('.') as [string]
  // Sign arbitrary payloads with the same key, the way the module does.
  const { createHmac } = await import('node:crypto')
  const signed = (payload: string): string =>
    `${header}.${payload}.${createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url')}`
  const exp = T0 / 1000 + 60
  t.equal(tokens.verify(signed(b64({ sub: 'u1', name: 'alice', exp }))).ok, true, 'the control payload verifies')
  t.same(tokens.verify(signed(b64({ name: 'alice', exp }))), { ok: false, reason: 'malformed' }, 'no sub')
  t.same(tokens.verify(signed(b64({ sub: 7, name: 'alice', exp }))), { ok: false, reason: 'malformed' }, 'numeric sub')
  t.same(tokens.verify(signed(b64({ sub: 'u1', exp }))), { ok: false, reason: 'malformed' }, 'no name')
  t.same(tokens.verify(signed(b64({ sub: 'u1', name: 'alice', exp: String(exp) }))), { ok: false, reason: 'malformed' }, 'string exp')
  t.same(tokens.verify(signed(Buffer.from('not json').toString('base64url'))), { ok: false, reason: 'malformed' }, 'payload not JSON')
})

t.test('bearerToken takes the token from the Bearer scheme only', async (t) => {
  t.equal(bearerToken('Bearer abc.def.ghi'), 'abc.def.ghi')
  t.equal(bearerToken('bearer abc'), 'abc', 'the scheme is case-insensitive (RFC 9110 11.1)')
  t.equal(bearerToken('BEARER   abc  '), 'abc', 'extra spaces around the token')
  t.equal(bearerToken(''), '', 'no header')
  t.equal(bearerToken('Bearer'), '', 'scheme without token')
  t.equal(bearerToken('Bearer '), '', 'scheme and a space')
  t.equal(bearerToken('Basic dXNlcjpwYXNz'), '', 'another scheme')
  t.equal(bearerToken('abc.def.ghi'), '', 'a bare token')
  t.equal(bearerToken('Bearer a b'), '', 'two tokens')
  t.equal(bearerToken('Bearerabc'), '', 'no space after the scheme')
})
