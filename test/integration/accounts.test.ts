import http from 'node:http'
import pg from 'pg'
import t, { type Test } from 'tap'
import { createTokens } from '../../src/auth/tokens.js'
import hashPassword from '../../workers/hash-password.worker.js'
import { systemClock, type Clock } from '../../src/clock.js'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, TEST_AUTH_SECRET, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { echo, startScriptedWorker, type ScriptedWorker } from '../fixtures/scripted-worker.js'
import { createTestDatabase } from '../fixtures/database.js'
import { waitFor } from '../fixtures/wait-for.js'

/**
 * The first password hash after start-up also waits for the worker thread to boot under
 * the TypeScript loader; on a loaded machine that passed the 5 s default task deadline and
 * the fixture's own registration got 503 overloaded. Nothing here tests that deadline.
 */
const SLOW_MACHINE = { THREAD_TASK_TIMEOUT_MS: '60000' }

const PASSWORD = 'correct horse battery'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/

function expectError (t: Test, answer: HttpAnswer, status: number, code: string, what = `${status} ${code}`): void {
  t.equal(answer.status, status, `${what}: status`)
  t.equal(answer.json?.error, code, `${what}: error code`)
  t.type(answer.json?.message, 'string', `${what}: message`)
  t.type(answer.json?.request_id, 'string', `${what}: request_id`)
  t.equal(answer.headers['x-request-id'], answer.json?.request_id, `${what}: X-Request-Id matches the body`)
}

const json = (value: unknown): string => JSON.stringify(value)

function register (gw: Gateway, body: unknown): Promise<HttpAnswer> {
  return gw.request('POST', '/api/auth/register', typeof body === 'string' || Buffer.isBuffer(body) ? body : json(body), { anonymous: true })
}

function login (gw: Gateway, body: unknown): Promise<HttpAnswer> {
  return gw.request('POST', '/api/auth/login', typeof body === 'string' || Buffer.isBuffer(body) ? body : json(body), { anonymous: true })
}

function me (gw: Gateway, authorization?: string): Promise<HttpAnswer> {
  return gw.request('GET', '/api/auth/me', undefined, authorization === undefined ? { anonymous: true } : { anonymous: true, headers: { authorization } })
}

/**
 * A login sent from another loopback address (all of 127.0.0.0/8 is local on Linux), so the
 * gateway sees another client address and the per-address and per-username limits can be
 * told apart.
 */
function loginFrom (gw: Gateway, localAddress: string, body: unknown): Promise<HttpAnswer> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: gw.port, method: 'POST', path: '/api/auth/login', localAddress, agent: false }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8')
        let parsed: unknown
        try { parsed = JSON.parse(text) } catch { parsed = undefined }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: parsed, ms: performance.now() - started })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(json(body))
  })
}

/** The gateway's token format, signed by whoever holds `secret`, at `clock`'s time. */
function tokenFor (secret: string, userId: string, username: string, clock: Clock = systemClock, ttlS = 3600): string {
  return createTokens({ secret, ttlS, clock }).sign(userId, username).token
}

/**
 * One gateway for the tests that need no limiter state of their own (each uses its own
 * usernames): starting a gateway on a fresh database costs seconds. A generous login limit
 * keeps their deliberate failures from adding up to a block; the rate-limit tests below
 * start their own gateways with LOGIN_MAX_FAILURES=3. An echo worker on a private broker
 * answers the one chat.
 */
let shared: Promise<{ gw: Gateway, worker: ScriptedWorker }> | undefined
function sharedGateway (): Promise<Gateway> {
  shared ??= (async () => {
    const broker = await startTestBroker()
    t.teardown(() => broker.close())
    const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
    t.teardown(() => worker.stop())
    const gw = await startGateway(t, { ...SLOW_MACHINE, MQTT_URL: broker.url, LOGIN_MAX_FAILURES: '1000', AUTH_TOKEN_TTL_S: '3600' })
    await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'link connected' })
    return { gw, worker }
  })()
  return shared.then((s) => s.gw)
}

t.test('registering answers 201 with the new id and the username as given', async (t) => {
  const gw = await sharedGateway()
  const answer = await register(gw, { username: 'Alice_1.x-y', password: PASSWORD })
  t.equal(answer.status, 201)
  t.same(Object.keys(answer.json).sort(), ['id', 'username'])
  t.match(answer.json.id, UUID)
  t.equal(answer.json.username, 'Alice_1.x-y')
  t.not(answer.json.id, gw.userId, 'a new id')
})

t.test('a taken username is 409 username_taken, also in another case', async (t) => {
  const gw = await sharedGateway()
  t.equal((await register(gw, { username: 'alice', password: PASSWORD })).status, 201)
  expectError(t, await register(gw, { username: 'alice', password: 'another password' }), 409, 'username_taken', 'same name')
  expectError(t, await register(gw, { username: 'Alice', password: PASSWORD }), 409, 'username_taken', '"Alice" after "alice"')
  expectError(t, await register(gw, { username: 'ALICE', password: PASSWORD }), 409, 'username_taken', '"ALICE" after "alice"')
  expectError(t, await register(gw, { username: 'Fixture-User', password: PASSWORD }), 409, 'username_taken', 'the fixture user in another case')
})

t.test('concurrent registrations of one name in different cases create exactly one account', async (t) => {
  const gw = await sharedGateway()
  const names = ['bob', 'Bob', 'BOB', 'bOb', 'boB', 'BoB']
  const answers = await Promise.all(names.map(async (username) => await register(gw, { username, password: PASSWORD })))
  t.same(answers.map((a) => a.status).sort(), [201, 409, 409, 409, 409, 409])
  for (const a of answers.filter((a) => a.status === 409)) t.equal(a.json.error, 'username_taken')
})

t.test('login matches the username in any case and answers with the registered spelling', async (t) => {
  const gw = await sharedGateway()
  const reg = await register(gw, { username: 'CamelCase', password: PASSWORD })
  const answer = await login(gw, { username: 'camelcase', password: PASSWORD })
  t.equal(answer.status, 200)
  t.same(answer.json.user, { id: reg.json.id, username: 'CamelCase' })
})

t.test('usernames that are not 3 to 32 characters of A-Z a-z 0-9 _ . - are 400 invalid_request naming username', async (t) => {
  const gw = await sharedGateway()
  const bad: Record<string, unknown> = {
    'two characters': 'ab',
    '33 characters': 'x'.repeat(33),
    'a very long name': 'x'.repeat(10_000),
    empty: '',
    'a space': 'has space',
    'a semicolon': 'semi;colon',
    'a quote': "o'brien",
    'a slash': 'a/b',
    'non-ASCII letters': 'zoë_ünïcode',
    'an emoji': 'ab\u{1F600}',
    'a number': 12345,
    null: null,
    'an array': ['alice'],
    'an object': { name: 'alice' },
    'a boolean': true
  }
  for (const [what, username] of Object.entries(bad)) {
    const answer = await register(gw, { username, password: PASSWORD })
    expectError(t, answer, 400, 'invalid_request', what)
    t.match(answer.json?.message, /username/, `${what}: the message names username`)
  }
  const missing = await register(gw, { password: PASSWORD })
  expectError(t, missing, 400, 'invalid_request', 'missing')
  t.match(missing.json?.message, /username/)
  for (const ok of ['abc', 'x'.repeat(32), 'a.b-c_D9']) {
    t.equal((await register(gw, { username: ok, password: PASSWORD })).status, 201, `${ok.length} characters "${ok.slice(0, 8)}..." is accepted`)
  }
})

t.test('passwords shorter than 8 or longer than 256 characters, or not strings, are 400 invalid_request naming password', async (t) => {
  const gw = await sharedGateway()
  const bad: Record<string, unknown> = {
    'seven characters': 'x'.repeat(7),
    '257 characters': 'x'.repeat(257),
    empty: '',
    'a number': 12345678,
    null: null,
    'an array': [PASSWORD],
    'an object': { value: PASSWORD }
  }
  let n = 0
  for (const [what, password] of Object.entries(bad)) {
    const answer = await register(gw, { username: `user${n++}`, password })
    expectError(t, answer, 400, 'invalid_request', what)
    t.match(answer.json?.message, /password/, `${what}: the message names password`)
  }
  const missing = await register(gw, { username: 'nopassword' })
  expectError(t, missing, 400, 'invalid_request', 'missing')
  t.match(missing.json?.message, /password/)
  t.equal((await register(gw, { username: 'eight', password: 'x'.repeat(8) })).status, 201, '8 characters are enough')
  t.equal((await register(gw, { username: 'longest', password: 'y'.repeat(256) })).status, 201, '256 characters are allowed')
  t.equal((await login(gw, { username: 'longest', password: 'y'.repeat(256) })).status, 200, 'and log in')
  // Nothing was created by the refused attempts.
  expectError(t, await login(gw, { username: 'user0', password: 'x'.repeat(7) }), 401, 'invalid_credentials', 'a refused registration made no account')
})

t.test('NUL, lone surrogates and invalid UTF-8 in register and login are 400 invalid_request, never a 5xx', async (t) => {
  const gw = await sharedGateway()
  // Raw JSON text, so the escapes reach the server exactly as written.
  const bodies: Record<string, string | Buffer> = {
    'NUL in username': '{"username":"ab\\u0000cd","password":"correct horse battery"}',
    'NUL in password': '{"username":"nulpass","password":"correct\\u0000horse"}',
    'lone high surrogate in username': '{"username":"ab\\ud800cd","password":"correct horse battery"}',
    'lone low surrogate in password': '{"username":"surrogate","password":"correct \\udc00 horse"}',
    'high surrogate at the end of password': '{"username":"surrogate","password":"correct horse \\ud83d"}',
    'reversed surrogate pair in password': '{"username":"surrogate","password":"correct \\ude00\\ud83d horse"}',
    'invalid UTF-8': Buffer.concat([Buffer.from('{"username":"utf8","password":"correct '), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from(' horse"}')]),
    'overlong UTF-8 NUL': Buffer.concat([Buffer.from('{"username":"utf8","password":"correct '), Buffer.from([0xc0, 0x80]), Buffer.from(' horse"}')]),
    'UTF-8 encoded surrogate': Buffer.concat([Buffer.from('{"username":"utf8","password":"correct '), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(' horse"}')]),
    'not JSON': '{"username":"x",',
    'a JSON array': '["alice","secret"]',
    'a JSON string': '"alice"',
    'JSON null': 'null',
    'an empty body': ''
  }
  for (const [what, body] of Object.entries(bodies)) {
    expectError(t, await register(gw, body), 400, 'invalid_request', `register, ${what}`)
    expectError(t, await login(gw, body), 400, 'invalid_request', `login, ${what}`)
  }
  // A proper surrogate pair is text like any other.
  t.equal((await register(gw, { username: 'emoji', password: 'secret \u{1F600} pass' })).status, 201, 'an emoji in a password is fine')
  t.equal((await login(gw, { username: 'emoji', password: 'secret \u{1F600} pass' })).status, 200)
  const health = await gw.request('GET', '/api/health')
  t.equal(health.status, 200, 'the gateway is still healthy')
})

t.test('SQL-looking usernames are refused by the pattern; SQL-looking passwords, titles and contents are stored verbatim', async (t) => {
  const gw = await sharedGateway()
  for (const username of ["admin'--", "x' OR '1'='1", 'a;DROP TABLE users', 'a"b']) {
    expectError(t, await register(gw, { username, password: PASSWORD }), 400, 'invalid_request', username)
  }
  const password = "'; DROP TABLE users; -- $1 \\ % _ \" ' OR 1=1"
  t.equal((await register(gw, { username: 'bobby', password })).status, 201)
  t.equal((await login(gw, { username: 'bobby', password })).status, 200, 'the password works verbatim')
  expectError(t, await login(gw, { username: 'bobby', password: "' OR '1'='1" }), 401, 'invalid_credentials', 'an injection is just a wrong password')
  expectError(t, await login(gw, { username: "bobby' --", password }), 401, 'invalid_credentials', 'an injection in the login username is an unknown user')

  const title = "Robert'); DROP TABLE chat_sessions; -- $$ \\x00 %s"
  const created = await gw.request('POST', '/api/chatbot/sessions', json({ title }))
  t.equal(created.status, 201)
  t.equal(created.json.title, title, 'the title comes back verbatim')
  const listed = await gw.request('GET', '/api/chatbot/sessions')
  t.equal(listed.json.find((s: { id: string }) => s.id === created.json.id)?.title, title, 'and is listed verbatim')

  const content = "'); DELETE FROM chat_messages; -- $1 \\' \"quoted\" \\\\ end"
  const chat = await gw.request('POST', '/api/chatbot/messages', json({ session_id: created.json.id, content }))
  t.equal(chat.status, 200)
  t.equal(chat.json.reply.content, `echo: ${content}`)
  const messages = await gw.request('GET', `/api/chatbot/sessions/${created.json.id as string}/messages`)
  t.same(messages.json.map((m: { role: string, content: string }) => [m.role, m.content]), [['user', content], ['assistant', `echo: ${content}`]])
  const { worker } = await (shared as NonNullable<typeof shared>)
  t.equal(worker.received.find((r) => r.session_id === created.json.id)?.content, content, 'the worker got it verbatim too')
})

t.test('login answers 200 with a token, an ISO-8601 expiry at now + AUTH_TOKEN_TTL_S and the user', async (t) => {
  const gw = await sharedGateway()
  const reg = await register(gw, { username: 'carol', password: PASSWORD })
  const before = Date.now()
  const answer = await login(gw, { username: 'carol', password: PASSWORD })
  const after = Date.now()
  t.equal(answer.status, 200)
  t.same(Object.keys(answer.json).sort(), ['expires_at', 'token', 'user'])
  t.match(answer.json.token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/)
  t.match(answer.json.expires_at, ISO_8601)
  const expires = Date.parse(answer.json.expires_at)
  // exp is whole seconds (JWT NumericDate), so it may fall up to 1 s before now + ttl.
  t.ok(expires >= before + 3600_000 - 1000 && expires <= after + 3600_000, `expires_at ${answer.json.expires_at as string} is an hour away`)
  t.same(answer.json.user, { id: reg.json.id, username: 'carol' })
  const who = await me(gw, `Bearer ${answer.json.token as string}`)
  t.equal(who.status, 200)
  t.same(who.json, { id: reg.json.id, username: 'carol' })
})

t.test('a wrong password and an unknown user get the same 401 invalid_credentials, apart from request_id', async (t) => {
  const gw = await sharedGateway()
  const wrong = await login(gw, { username: 'fixture-user', password: 'not the password' })
  const unknown = await login(gw, { username: 'nobody-here', password: 'not the password' })
  expectError(t, wrong, 401, 'invalid_credentials', 'wrong password')
  expectError(t, unknown, 401, 'invalid_credentials', 'unknown user')
  t.not(wrong.json.request_id, unknown.json.request_id)
  const strip = (a: HttpAnswer): unknown => ({ ...a.json, request_id: undefined })
  t.same(strip(wrong), strip(unknown), 'identical bodies')
  t.equal(wrong.headers['content-type'], unknown.headers['content-type'])
  t.equal(wrong.headers['www-authenticate'], unknown.headers['www-authenticate'])
  t.equal(wrong.text.length - wrong.json.request_id.length, unknown.text.length - unknown.json.request_id.length, 'same length')
})

t.test('GET /api/auth/me answers 200 with the token\'s user', async (t) => {
  const gw = await sharedGateway()
  const answer = await gw.request('GET', '/api/auth/me')
  t.equal(answer.status, 200)
  t.same(answer.json, { id: gw.userId, username: 'fixture-user' })
  const other = await gw.newUser('dave')
  t.same((await gw.request('GET', '/api/auth/me', undefined, { token: other.token })).json, { id: other.id, username: 'dave' })
})

t.test('GET /api/auth/me answers 401 unauthorized with the error JSON to a missing, forged, expired, malformed or non-Bearer token', async (t) => {
  const gw = await sharedGateway()
  const [header, payload] = gw.token.split('.') as [string, string, string]
  const b64 = (value: unknown): string => Buffer.from(json(value)).toString('base64url')
  const hourAgo: Clock = { ...systemClock, now: () => Date.now() - 3600_000 }
  const cases: Record<string, string | undefined> = {
    'no Authorization header': undefined,
    'an empty Authorization header': '',
    'Bearer with no token': 'Bearer ',
    'signed with another secret': `Bearer ${tokenFor('someone-elses-secret-someone-elses-secret', gw.userId, 'fixture-user')}`,
    'expired (issued an hour ago, ttl 60 s)': `Bearer ${tokenFor(TEST_AUTH_SECRET, gw.userId, 'fixture-user', hourAgo, 60)}`,
    'payload swapped for another user': `Bearer ${header}.${b64({ sub: '00000000-0000-0000-0000-000000000000', name: 'x', exp: 4_000_000_000 })}.${gw.token.split('.')[2] as string}`,
    '"abc"': 'Bearer abc',
    '"a.b.c"': 'Bearer a.b.c',
    'alg none': `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`,
    'the right token in the Basic scheme': `Basic ${gw.token}`,
    'Basic credentials': `Basic ${Buffer.from(`fixture-user:${PASSWORD}`).toString('base64')}`,
    'the token without a scheme': gw.token,
    'two tokens': `Bearer ${gw.token} ${gw.token}`
  }
  for (const [what, authorization] of Object.entries(cases)) {
    const answer = await me(gw, authorization)
    expectError(t, answer, 401, 'unauthorized', what)
    t.notOk(JSON.stringify(answer.json ?? {}).includes('fixture-user'), `${what}: nothing about the user leaks`)
  }
  t.equal((await me(gw, `Bearer ${gw.token}`)).status, 200, 'the real token still works')
})

t.test('a valid token of a deleted account is 401 unauthorized', async (t) => {
  const gw = await sharedGateway()
  const ghost = await gw.newUser('ghost')
  const client = new pg.Client({ connectionString: gw.databaseUrl })
  await client.connect()
  t.teardown(() => client.end())
  await client.query('DELETE FROM users WHERE id = $1', [ghost.id])
  expectError(t, await gw.request('GET', '/api/auth/me', undefined, { token: ghost.token }), 401, 'unauthorized')
})

t.test('a hash cheaper than PASSWORD_HASH_COST is replaced at the next successful login', async (t) => {
  // The fixture hashes at 2^12; a hash from before a cost raise is planted at 2^10.
  const gw = await sharedGateway()
  const old = await gw.newUser('old-hash', 'the old password')
  const client = new pg.Client({ connectionString: gw.databaseUrl })
  await client.connect()
  t.teardown(() => client.end())
  await client.query('UPDATE users SET password_hash = $1 WHERE id = $2', [await hashPassword({ password: 'the old password', cost: 10 }), old.id])
  const stored = async (): Promise<string> => (await client.query<{ password_hash: string }>('SELECT password_hash FROM users WHERE id = $1', [old.id])).rows[0]?.password_hash ?? ''
  t.match(await stored(), /^scrypt\$1024\$/)
  const login = await gw.request('POST', '/api/auth/login', JSON.stringify({ username: 'old-hash', password: 'the old password' }), { anonymous: true })
  t.equal(login.status, 200, 'the old hash still verifies')
  await waitFor(async () => (await stored()).startsWith('scrypt$4096$'), { what: 'the hash upgraded to the current cost' })
  t.equal((await gw.request('POST', '/api/auth/login', JSON.stringify({ username: 'old-hash', password: 'the old password' }), { anonymous: true })).status, 200, 'and the new one verifies')
})

/**
 * One gateway with LOGIN_MAX_FAILURES=3 for the rate-limit tests. The limiter keys on the
 * username and on the client address, so each test uses its own usernames and its own
 * loopback addresses (127.0.<test>.<n>), and no test can be blocked by another's failures.
 * 3 failures refill at 3 per 60 s: a test would have to stall for 20 s to see a refill.
 */
let limited: Promise<Gateway> | undefined
function limitedGateway (): Promise<Gateway> {
  limited ??= startGateway(t, { ...SLOW_MACHINE, LOGIN_MAX_FAILURES: '3' })
  return limited
}

t.test('after LOGIN_MAX_FAILURES failed logins for a username, login is 429 rate_limited with Retry-After, even with the right password', async (t) => {
  const gw = await limitedGateway()
  const user = await gw.newUser('limit-a')
  for (let i = 1; i <= 3; i++) {
    expectError(t, await loginFrom(gw, '127.0.1.1', { username: 'limit-a', password: `wrong password ${i}` }), 401, 'invalid_credentials', `failure ${i}`)
  }
  const blocked = await loginFrom(gw, '127.0.1.1', { username: 'limit-a', password: 'wrong password 4' })
  expectError(t, blocked, 429, 'rate_limited', 'the 4th attempt')
  const retryAfter = blocked.headers['retry-after']
  t.match(retryAfter, /^\d+$/, 'Retry-After is whole seconds')
  t.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60, `Retry-After ${String(retryAfter)} is between 1 and 60`)
  const right = await loginFrom(gw, '127.0.1.1', { username: 'limit-a', password: PASSWORD })
  expectError(t, right, 429, 'rate_limited', 'the right password while blocked')
  t.notOk('token' in (right.json ?? {}), 'no token')
  expectError(t, await loginFrom(gw, '127.0.1.1', { username: 'LIMIT-A', password: PASSWORD }), 429, 'rate_limited', 'the same name in another case')
  t.equal((await gw.request('GET', '/api/auth/me', undefined, { token: user.token })).status, 200, 'tokens issued earlier still work')
})

t.test('failed logins for different usernames from one address block that address for every username', async (t) => {
  const gw = await limitedGateway()
  await gw.newUser('limit-b')
  for (const username of ['guess-b1', 'guess-b2', 'guess-b3']) {
    expectError(t, await loginFrom(gw, '127.0.2.1', { username, password: 'wrong password' }), 401, 'invalid_credentials', username)
  }
  // Each username failed once only: it is the address that is over the limit.
  const blocked = await loginFrom(gw, '127.0.2.1', { username: 'limit-b', password: PASSWORD })
  expectError(t, blocked, 429, 'rate_limited', 'another username with the right password from the same address')
  t.ok(Number(blocked.headers['retry-after']) >= 1, 'Retry-After set')
  const elsewhere = await loginFrom(gw, '127.0.2.2', { username: 'limit-b', password: PASSWORD })
  t.equal(elsewhere.status, 200, 'the same user from another address is let in')
})

t.test('a username over the limit is refused from every address', async (t) => {
  const gw = await limitedGateway()
  await gw.newUser('limit-c')
  await gw.newUser('limit-c2')
  for (let i = 1; i <= 3; i++) {
    expectError(t, await loginFrom(gw, `127.0.3.${i}`, { username: 'limit-c', password: 'wrong password' }), 401, 'invalid_credentials', `failure ${i}, each from its own address`)
  }
  expectError(t, await loginFrom(gw, '127.0.3.10', { username: 'limit-c', password: PASSWORD }), 429, 'rate_limited', 'the right password from a fresh address')
  t.equal((await loginFrom(gw, '127.0.3.10', { username: 'limit-c2', password: PASSWORD })).status, 200, 'another user from that address is let in')
})

t.test('a successful login before the limit works and clears the username\'s failures', async (t) => {
  const gw = await limitedGateway()
  await gw.newUser('limit-d')
  for (let i = 1; i <= 2; i++) {
    expectError(t, await loginFrom(gw, '127.0.4.1', { username: 'limit-d', password: 'wrong password' }), 401, 'invalid_credentials', `failure ${i}`)
  }
  const ok = await loginFrom(gw, '127.0.4.1', { username: 'limit-d', password: PASSWORD })
  t.equal(ok.status, 200, 'the right password before the limit')
  t.type(ok.json?.token, 'string')
  // The username starts afresh: three more failures (from another address, whose own
  // count is fresh) are answered 401 before the limit applies again.
  for (let i = 1; i <= 3; i++) {
    expectError(t, await loginFrom(gw, '127.0.4.2', { username: 'limit-d', password: 'wrong password' }), 401, 'invalid_credentials', `fresh failure ${i}`)
  }
  expectError(t, await loginFrom(gw, '127.0.4.3', { username: 'limit-d', password: PASSWORD }), 429, 'rate_limited', 'then the limit applies again')
})

t.test('a malformed login body is 400 and does not count as a failed login', async (t) => {
  const gw = await limitedGateway()
  await gw.newUser('limit-e')
  for (let i = 1; i <= 5; i++) {
    expectError(t, await loginFrom(gw, '127.0.5.1', { username: 'limit-e', password: 12345678 }), 400, 'invalid_request', `malformed ${i}`)
  }
  t.equal((await loginFrom(gw, '127.0.5.1', { username: 'limit-e', password: PASSWORD })).status, 200)
})

t.test('concurrent failed logins cannot get more than LOGIN_MAX_FAILURES password checks past the limiter', async (t) => {
  const gw = await limitedGateway()
  await gw.newUser('limit-f')
  const answers = await Promise.all(Array.from({ length: 12 }, async (_, i) =>
    await loginFrom(gw, '127.0.6.1', { username: 'limit-f', password: `guess number ${i}` })))
  const statuses = answers.map((a) => a.status)
  t.same([...new Set(statuses)].filter((s) => s !== 401 && s !== 429), [], `only 401 and 429 (${statuses.join(' ')})`)
  t.ok(statuses.filter((s) => s === 401).length <= 3, `at most 3 guesses were checked, got ${statuses.filter((s) => s === 401).length}`)
})

t.test('login limits hold across gateways: failures spread over three gateways on one database trip the limit at the same count as on one', async (t) => {
  const db = await createTestDatabase(t)
  const env = { ...SLOW_MACHINE, LOGIN_MAX_FAILURES: '3', DATABASE_URL: db.url }
  const [g1, g2, g3] = await Promise.all([1, 2, 3].map(async (n) => await startGateway(t, env, { username: `cluster-fixture-${n}` }))) as [Gateway, Gateway, Gateway]
  await g1.newUser('spread-user')
  // One failure per gateway, each from its own address: only the username is shared.
  for (const [i, gw] of [g1, g2, g3].entries()) {
    expectError(t, await loginFrom(gw, `127.0.9.${i + 1}`, { username: 'spread-user', password: 'wrong' }), 401, 'invalid_credentials', `failure ${i + 1} on gateway ${i + 1}`)
  }
  const blocked = await loginFrom(g1, '127.0.9.4', { username: 'spread-user', password: PASSWORD })
  expectError(t, blocked, 429, 'rate_limited', 'the 4th attempt, on gateway 1, even with the right password')
  t.ok(Number(blocked.headers['retry-after']) >= 1)
  expectError(t, await loginFrom(g2, '127.0.9.5', { username: 'spread-user', password: PASSWORD }), 429, 'rate_limited', 'and on gateway 2')

  // One address, different usernames, spread over the gateways: the address is over the limit.
  for (const [i, gw] of [g1, g2, g3].entries()) {
    expectError(t, await loginFrom(gw, '127.0.9.9', { username: `nobody-${i}`, password: 'wrong' }), 401, 'invalid_credentials', `address failure ${i + 1}`)
  }
  expectError(t, await loginFrom(g3, '127.0.9.9', { username: 'cluster-fixture-3', password: PASSWORD }), 429, 'rate_limited', 'the address is blocked on every gateway')
  // A successful login gives its address its token back, everywhere.
  const ok = await loginFrom(g2, '127.0.9.10', { username: 'cluster-fixture-2', password: PASSWORD })
  t.equal(ok.status, 200, ok.text)
})
