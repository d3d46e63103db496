import pg from 'pg'
import t, { type Test } from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { done, echo, fail, silent, startScriptedWorker, type Behaviour, type ChatRequest, type ScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

/**
 * The first password hash after start-up also waits for the worker thread to boot under
 * the TypeScript loader; on a loaded machine that passed the 5 s default task deadline and
 * the fixture's own registration got 503 overloaded. Nothing here tests that deadline.
 */
const SLOW_MACHINE = { THREAD_TASK_TIMEOUT_MS: '60000' }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/
const RANDOM_UUID = '6f1c2a4e-9b3d-4c5e-8f70-0123456789ab'

interface Setup { gw: Gateway, worker: ScriptedWorker }

async function setup (t: Test, behaviour: Behaviour, env: Record<string, string> = {}): Promise<Setup> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour })
  t.teardown(() => worker.stop())
  const gw = await startGateway(t, { ...SLOW_MACHINE, MQTT_URL: broker.url, ...env })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'link connected' })
  return { gw, worker }
}

/**
 * The tests that need no configuration of their own share one gateway (starting one on a
 * fresh database costs seconds). Its worker answers each session as `scripts` says, and
 * echoes otherwise; every test works on its own sessions or users.
 */
const scripts = new Map<string, Behaviour>()
let shared: Promise<Setup> | undefined
function sharedSetup (): Promise<Setup> {
  // 5 s: the timeout test waits it out, and an echo takes well under 100 ms even on a
  // loaded machine.
  shared ??= setup(t, (request) => (scripts.get(request.session_id) ?? echo)(request), { CHAT_TIMEOUT_MS: '5000' })
  return shared
}

function expectError (t: Test, answer: HttpAnswer, status: number, code: string, what = `${status} ${code}`): void {
  t.equal(answer.status, status, `${what}: status`)
  t.equal(answer.json?.error, code, `${what}: error code`)
  t.type(answer.json?.message, 'string', `${what}: message`)
  t.type(answer.json?.request_id, 'string', `${what}: request_id`)
  t.equal(answer.headers['x-request-id'], answer.json?.request_id, `${what}: X-Request-Id matches the body`)
}

const json = (value: unknown): string => JSON.stringify(value)

function createSession (gw: Gateway, body: string | undefined, token?: string): Promise<HttpAnswer> {
  return gw.request('POST', '/api/chatbot/sessions', body, token === undefined ? {} : { token })
}

async function newSession (gw: Gateway, title: string, token?: string): Promise<string> {
  const answer = await createSession(gw, json({ title }), token)
  if (answer.status !== 201) throw new Error(`create session: ${answer.status} ${answer.text}`)
  return answer.json.id
}

function chat (gw: Gateway, sessionId: string, content: string, token?: string): Promise<HttpAnswer> {
  return gw.request('POST', '/api/chatbot/messages', json({ session_id: sessionId, content }), token === undefined ? {} : { token })
}

function messages (gw: Gateway, sessionId: string, token?: string): Promise<HttpAnswer> {
  return gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`, undefined, token === undefined ? {} : { token })
}

const turns = (answer: HttpAnswer): Array<[string, string]> =>
  (answer.json as Array<{ role: string, content: string }>).map((m) => [m.role, m.content])

const requestsFor = (worker: ScriptedWorker, sessionId: string): ChatRequest[] =>
  worker.received.filter((r) => r.session_id === sessionId)

t.test('creating a session answers 201 with id, title and created_at, with a title, without one and with an empty body', async (t) => {
  const { gw } = await sharedSetup()
  const before = Date.now()
  const bodies: Array<[string, string | undefined, string]> = [
    ['a title', json({ title: 'My first chat' }), 'My first chat'],
    ['an empty object', json({}), ''],
    ['an empty body', undefined, ''],
    ['an empty title', json({ title: '' }), ''],
    ['a 200-character title', json({ title: 't'.repeat(200) }), 't'.repeat(200)],
    ['a title with an emoji', json({ title: 'chat \u{1F600}' }), 'chat \u{1F600}']
  ]
  for (const [what, body, title] of bodies) {
    const answer = await createSession(gw, body)
    t.equal(answer.status, 201, `${what}: 201`)
    t.same(Object.keys(answer.json ?? {}).sort(), ['created_at', 'id', 'title'], `${what}: exactly id, title, created_at`)
    t.match(answer.json?.id, UUID, `${what}: a UUID`)
    t.equal(answer.json?.title, title, `${what}: title`)
    t.match(answer.json?.created_at, ISO_8601, `${what}: created_at is ISO-8601`)
    const at = Date.parse(answer.json?.created_at)
    t.ok(at >= before - 5000 && at <= Date.now() + 5000, `${what}: created_at is now`)
  }
})

t.test('a session title that is not a string, too long or with NUL or a lone surrogate is 400 invalid_request naming title', async (t) => {
  const { gw } = await sharedSetup()
  const bad: Record<string, string> = {
    'a number': json({ title: 42 }),
    'a boolean': json({ title: true }),
    'an array': json({ title: ['x'] }),
    'an object': json({ title: { text: 'x' } }),
    '201 characters': json({ title: 't'.repeat(201) }),
    'a NUL': '{"title":"a\\u0000b"}',
    'a lone surrogate': '{"title":"a\\ud800b"}'
  }
  for (const [what, body] of Object.entries(bad)) {
    const answer = await createSession(gw, body)
    expectError(t, answer, 400, 'invalid_request', what)
    t.match(answer.json?.message, /title/, `${what}: the message names title`)
  }
  expectError(t, await createSession(gw, '{"title":'), 400, 'invalid_request', 'not JSON')
  expectError(t, await createSession(gw, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]).toString('latin1')), 400, 'invalid_request', 'not UTF-8')
  expectError(t, await createSession(gw, json({ title: 'x' }), 'not-a-token'), 401, 'unauthorized', 'no valid token')
})

t.test('GET /api/chatbot/sessions lists only the caller\'s sessions, newest first', async (t) => {
  const { gw } = await sharedSetup()
  const frank = await gw.newUser('frank')
  const grace = await gw.newUser('grace')
  t.same((await gw.request('GET', '/api/chatbot/sessions', undefined, { token: frank.token })).json, [], 'none yet')
  const created: string[] = []
  for (const title of ['first', 'second', 'third']) created.push(await newSession(gw, title, frank.token))
  const gracesOwn = await newSession(gw, 'grace only', grace.token)

  const listed = await gw.request('GET', '/api/chatbot/sessions', undefined, { token: frank.token })
  t.equal(listed.status, 200)
  t.same(listed.json.map((s: { id: string }) => s.id), [...created].reverse(), 'frank\'s three, newest first')
  t.same(listed.json.map((s: { title: string }) => s.title), ['third', 'second', 'first'])
  for (const s of listed.json) {
    t.same(Object.keys(s).sort(), ['created_at', 'id', 'title'])
    t.match(s.created_at, ISO_8601)
  }
  t.same((await gw.request('GET', '/api/chatbot/sessions', undefined, { token: grace.token })).json.map((s: { id: string }) => s.id), [gracesOwn], 'grace sees only hers')
  expectError(t, await gw.request('GET', '/api/chatbot/sessions', undefined, { anonymous: true }), 401, 'unauthorized', 'no token')
})

t.test('another user\'s session, a random UUID and a non-UUID id all get the same 404 session_not_found for messages', async (t) => {
  const { gw } = await sharedSetup()
  const heidi = await gw.newUser('heidi')
  const hers = await newSession(gw, 'private', heidi.token)
  t.equal((await chat(gw, hers, 'a secret', heidi.token)).status, 200)

  const answers = {
    'another user\'s session': await messages(gw, hers),
    'a random UUID': await messages(gw, RANDOM_UUID),
    'a well-formed id that is not a UUID': await messages(gw, 'not-a-uuid'),
    'the other user\'s session id in upper case': await messages(gw, hers.toUpperCase())
  }
  for (const [what, answer] of Object.entries(answers)) {
    expectError(t, answer, 404, 'session_not_found', what)
    t.notOk(answer.text.includes('secret'), `${what}: nothing of the session leaks`)
  }
  const shape = (a: HttpAnswer): unknown => [a.status, a.json?.error, a.json?.message, a.headers['content-type']]
  const [first, ...rest] = Object.values(answers)
  for (const other of rest) t.same(shape(other), shape(first as HttpAnswer), 'indistinguishable')
  t.equal((await messages(gw, hers, heidi.token)).status, 200, 'the owner still reads it')
})

// Contract, Identifiers: session ids match [A-Za-z0-9_-]{1,64}; "Anything else is 400 (HTTP)".
t.test('a session id that breaks the identifier rule is 400 invalid_request on the messages listing', async (t) => {
  const { gw } = await sharedSetup()
  for (const bad of ['x'.repeat(65), 'a.b', 'a+b', '%23', 'a%2Fb']) {
    expectError(t, await messages(gw, bad), 400, 'invalid_request', JSON.stringify(bad))
  }
})

t.test('a chat on another user\'s session is 404 session_not_found, publishes nothing and stores nothing', async (t) => {
  const { gw, worker } = await sharedSetup()
  const ivan = await gw.newUser('ivan')
  const his = await newSession(gw, 'ivan\'s', ivan.token)
  expectError(t, await chat(gw, his, 'intruding'), 404, 'session_not_found', 'another user\'s session')
  expectError(t, await chat(gw, RANDOM_UUID, 'nowhere'), 404, 'session_not_found', 'an unknown UUID')
  expectError(t, await chat(gw, 'not-a-uuid', 'nowhere'), 404, 'session_not_found', 'a well-formed id that is not a UUID')
  // Had the refused chats been published, the worker would have got them before this one
  // (one publisher, QoS 1, in order): once this one is answered, they are not coming.
  const mine = await newSession(gw, 'mine')
  t.equal((await chat(gw, mine, 'allowed')).status, 200)
  t.same(worker.received.filter((r) => [his, RANDOM_UUID, 'not-a-uuid'].includes(r.session_id) || r.content === 'intruding' || r.content === 'nowhere'), [], 'nothing published for the refused chats')
  t.same((await messages(gw, his, ivan.token)).json, [], 'nothing stored in ivan\'s session')
})

t.test('the user\'s message is stored before the chat is published', async (t) => {
  const { gw } = await sharedSetup()
  const session = await newSession(gw, 'stored first')
  const seen: HttpAnswer[] = []
  // The worker looks at the session through the gateway while it holds the request.
  scripts.set(session, async (request) => {
    seen.push(await messages(gw, request.session_id))
    return [done(request, 'looked')]
  })
  t.teardown(() => { scripts.delete(session) })
  const answer = await chat(gw, session, 'am I there yet?')
  t.equal(answer.status, 200)
  t.equal(seen.length, 1)
  t.same(turns(seen[0] as HttpAnswer), [['user', 'am I there yet?']], 'the worker saw the user\'s message already stored, and no reply')
})

t.test('a done reply is stored as the assistant message and message_id is its id', async (t) => {
  const { gw } = await sharedSetup()
  const session = await newSession(gw, 'stored reply')
  const answer = await chat(gw, session, 'hello there')
  t.equal(answer.status, 200)
  t.equal(answer.json.reply.content, 'echo: hello there')
  const listed = await messages(gw, session)
  t.equal(listed.status, 200)
  t.same(turns(listed), [['user', 'hello there'], ['assistant', 'echo: hello there']])
  const [user, assistant] = listed.json as Array<{ id: string, created_at: string }>
  t.equal(answer.json.message_id, assistant?.id, 'message_id is the assistant message')
  t.not(answer.json.message_id, user?.id)
  for (const m of listed.json) {
    t.same(Object.keys(m).sort(), ['content', 'created_at', 'id', 'role', 'status'])
    t.equal(m.status, 'complete')
    t.match(m.id, UUID)
    t.match(m.created_at, ISO_8601)
  }
  t.ok(Date.parse(user?.created_at ?? '') <= Date.parse(assistant?.created_at ?? ''), 'the user message is not newer than the reply')
})

t.test('a worker error is 502 and stores the user\'s message but no assistant message', async (t) => {
  const { gw } = await sharedSetup()
  const session = await newSession(gw, 'failing')
  scripts.set(session, fail('model exploded'))
  t.teardown(() => { scripts.delete(session) })
  const answer = await chat(gw, session, 'please fail')
  expectError(t, answer, 502, 'llm_error')
  t.same(turns(await messages(gw, session)), [['user', 'please fail']])
})

t.test('a timeout is 504 and stores the user\'s message but no assistant message', async (t) => {
  const { gw } = await sharedSetup()
  const session = await newSession(gw, 'silent')
  scripts.set(session, silent)
  t.teardown(() => { scripts.delete(session) })
  const answer = await chat(gw, session, 'anyone there?')
  expectError(t, answer, 504, 'llm_timeout')
  t.ok(answer.ms >= 4900, `answered at the deadline (${Math.round(answer.ms)} ms)`)
  t.same(turns(await messages(gw, session)), [['user', 'anyone there?']])
})

t.test('the worker gets the session\'s earlier turns as history, oldest first, without the current message', async (t) => {
  const { gw, worker } = await sharedSetup()
  const session = await newSession(gw, 'history')
  const other = await newSession(gw, 'other history')
  for (const content of ['one', 'two', 'three']) t.equal((await chat(gw, session, content)).status, 200)
  t.equal((await chat(gw, other, 'elsewhere')).status, 200)
  const sent = requestsFor(worker, session)
  t.equal(sent.length, 3)
  t.same(sent.map((r) => r.content), ['one', 'two', 'three'])
  t.same(sent[0]?.history, [], 'the first chat has no history')
  t.same(sent[1]?.history, [{ role: 'user', content: 'one' }, { role: 'assistant', content: 'echo: one' }])
  t.same(sent[2]?.history, [
    { role: 'user', content: 'one' }, { role: 'assistant', content: 'echo: one' },
    { role: 'user', content: 'two' }, { role: 'assistant', content: 'echo: two' }
  ])
  t.same(requestsFor(worker, other)[0]?.history, [], 'another session\'s turns are not mixed in')
})

t.test('with HISTORY_MAX_MESSAGES 2 only the last two turns are sent', async (t) => {
  const { gw, worker } = await setup(t, echo, { HISTORY_MAX_MESSAGES: '2' })
  const session = await newSession(gw, 'short memory')
  for (const content of ['one', 'two', 'three']) t.equal((await chat(gw, session, content)).status, 200)
  const sent = requestsFor(worker, session)
  t.same(sent[1]?.history, [{ role: 'user', content: 'one' }, { role: 'assistant', content: 'echo: one' }])
  t.same(sent[2]?.history, [{ role: 'user', content: 'two' }, { role: 'assistant', content: 'echo: two' }], 'the newest two, oldest first')
  t.equal((await messages(gw, session)).json.length, 6, 'everything is still stored')
})

t.test('with a small HISTORY_MAX_CHARS history is trimmed from the oldest turn', async (t) => {
  // 'aaaa' (4) and 'echo: aaaa' (10) fit in 20; adding 'bbbb' and 'echo: bbbb' makes 28.
  const { gw, worker } = await setup(t, echo, { HISTORY_MAX_CHARS: '20' })
  const session = await newSession(gw, 'small budget')
  for (const content of ['aaaa', 'bbbb', 'cccc']) t.equal((await chat(gw, session, content)).status, 200)
  const sent = requestsFor(worker, session)
  t.same(sent[1]?.history, [{ role: 'user', content: 'aaaa' }, { role: 'assistant', content: 'echo: aaaa' }], '14 characters fit')
  t.same(sent[2]?.history, [{ role: 'user', content: 'bbbb' }, { role: 'assistant', content: 'echo: bbbb' }], 'the oldest turns are dropped first')
  const long = await chat(gw, session, 'x'.repeat(30))
  t.equal(long.status, 200)
  t.equal((await chat(gw, session, 'after a long one')).status, 200)
  t.same(requestsFor(worker, session)[4]?.history, [], 'a newest turn over the budget leaves nothing (older turns are not sent without it)')
})

t.test('a chat without a valid token is 401 unauthorized with the error JSON and publishes nothing', async (t) => {
  const { gw, worker } = await sharedSetup()
  const session = await newSession(gw, 'needs a token')
  expectError(t, await gw.request('POST', '/api/chatbot/messages', json({ session_id: session, content: 'hi' }), { anonymous: true }), 401, 'unauthorized', 'no token')
  expectError(t, await chat(gw, session, 'hi', 'abc.def.ghi'), 401, 'unauthorized', 'a malformed token')
  expectError(t, await gw.request('POST', '/api/chatbot/messages', json({ session_id: session, content: 'hi' }), { anonymous: true, headers: { authorization: `Basic ${gw.token}` } }), 401, 'unauthorized', 'another scheme')
  t.same(requestsFor(worker, session), [])
  t.same((await messages(gw, session)).json, [], 'nothing stored')
})

t.test('a chat with a malformed session id is 400 invalid_request naming session_id', async (t) => {
  const { gw } = await sharedSetup()
  for (const bad of ['a/b', 'llm/#', 'a+b', '', 'x'.repeat(65), 'with space', '6f1c2a4e.9b3d']) {
    const answer = await chat(gw, bad, 'hi')
    expectError(t, answer, 400, 'invalid_request', JSON.stringify(bad))
    t.match(answer.json?.message, /session_id/)
  }
  const numeric = await gw.request('POST', '/api/chatbot/messages', json({ session_id: 42, content: 'hi' }))
  expectError(t, numeric, 400, 'invalid_request', 'a number')
})

t.test('a session with more messages than the listing holds lists its newest ones', async (t) => {
  const { gw } = await sharedSetup()
  const session = await newSession(gw, 'long')
  // Seeded directly: 1,001 turns through a worker would take a while and pin nothing more.
  const client = new pg.Client({ connectionString: gw.databaseUrl })
  await client.connect()
  t.teardown(() => client.end())
  await client.query(`INSERT INTO chat_messages (session_id, role, content)
    SELECT $1, CASE WHEN n % 2 = 1 THEN 'user' ELSE 'assistant' END, 'message ' || n FROM generate_series(1, 1001) AS n`, [session])
  const listed = await messages(gw, session)
  t.equal(listed.status, 200)
  const contents = (listed.json as Array<{ content: string }>).map((m) => m.content)
  t.ok(contents.length >= 1 && contents.length <= 1001)
  t.equal(contents.at(-1), 'message 1001', 'the newest message is listed, last')
  t.ok(contents.every((c, i) => i === 0 || Number(c.split(' ')[1]) > Number((contents[i - 1] as string).split(' ')[1])), 'oldest first')
})
