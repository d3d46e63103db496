import t, { type Test } from 'tap'
import { createTokens } from '../../../src/auth/tokens.js'
import type { Clock } from '../../../src/clock.js'
import { TetherError } from '../../../src/errors.js'
import { pickToken } from '../../../src/ws/upgrade.js'

const SECRET = 'unit-test-secret-unit-test-secret-0123456789'
const T0 = 1_700_000_000_000

function clockAt (ms: number): Clock {
  return { now: () => ms, setTimeout: () => { throw new Error('no timers') }, clearTimeout: () => {} }
}

const tokens = createTokens({ secret: SECRET, ttlS: 3600, clock: clockAt(T0) })
const good = tokens.sign('user-1', 'alice').token
const forged = createTokens({ secret: 'another-secret-another-secret-0123456789', ttlS: 3600, clock: clockAt(T0) }).sign('user-1', 'alice').token
const expired = createTokens({ secret: SECRET, ttlS: 60, clock: clockAt(T0 - 3_600_000) }).sign('user-1', 'alice').token

function refusal (t: Test, result: ReturnType<typeof pickToken>, pattern: RegExp): void {
  t.ok(result instanceof TetherError, 'refused')
  if (result instanceof TetherError) {
    t.equal(result.code, 'unauthorized')
    t.equal(result.status, 401)
    t.match(result.message, pattern)
  }
}

t.test('pickToken takes the token from the query and answers no protocol when none was offered', async (t) => {
  const result = pickToken(tokens, good, [])
  t.notOk(result instanceof TetherError)
  if (!(result instanceof TetherError)) {
    t.same(result.claims, { userId: 'user-1', username: 'alice', expiresAt: T0 / 1000 + 3600 })
    t.equal(result.protocol, '')
  }
})

t.test('pickToken takes the token from "bearer, <token>" and answers "bearer"', async (t) => {
  const result = pickToken(tokens, '', ['bearer', good])
  t.notOk(result instanceof TetherError)
  if (!(result instanceof TetherError)) {
    t.equal(result.claims.userId, 'user-1')
    t.equal(result.protocol, 'bearer')
  }
})

t.test('pickToken with a query token answers the client\'s own first protocol', async (t) => {
  const result = pickToken(tokens, good, ['tether.v1'])
  t.notOk(result instanceof TetherError)
  if (!(result instanceof TetherError)) t.equal(result.protocol, 'tether.v1')
})

t.test('pickToken never answers the token itself as the protocol', async (t) => {
  const result = pickToken(tokens, '', ['bearer', good])
  if (!(result instanceof TetherError)) t.not(result.protocol, good)
})

t.test('pickToken refuses a missing token with 401 saying one is required', async (t) => {
  refusal(t, pickToken(tokens, '', []), /required/)
})

t.test('pickToken refuses a token signed with another secret', async (t) => {
  refusal(t, pickToken(tokens, forged, []), /not valid/)
  refusal(t, pickToken(tokens, '', ['bearer', forged]), /not valid/)
})

t.test('pickToken refuses an expired token and says so', async (t) => {
  refusal(t, pickToken(tokens, expired, []), /expired/)
  refusal(t, pickToken(tokens, '', ['bearer', expired]), /expired/)
})

t.test('pickToken refuses "bearer" offered with no token after it', async (t) => {
  refusal(t, pickToken(tokens, '', ['bearer']), /not valid|required/)
})

t.test('pickToken refuses a token offered in an unrelated protocol entry (not after "bearer")', async (t) => {
  // docs/websocket.md: the token comes as ?token= or as ['bearer', token]. A protocol list
  // such as "graphql-ws, <token>" does not say "this is a bearer token"; accepting any entry
  // that happens to verify makes every subprotocol a credential slot (and answers
  // "graphql-ws" as if that protocol had been negotiated).
  refusal(t, pickToken(tokens, '', ['graphql-ws', good]), /./)
  refusal(t, pickToken(tokens, '', [good]), /./)
})
