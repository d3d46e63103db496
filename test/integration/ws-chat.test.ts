/**
 * The chat socket (/api/chatbot/ws): chats streamed as chunk frames then done or error, with
 * the same caps, deadlines and persistence as the HTTP path (docs/websocket.md, "Chat"),
 * against the embedded broker or (MQTT_TEST_URL set) a private Mosquitto.
 */
import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { chunk, done, echo, failure, pause, startScriptedWorker, type Behaviour, type ScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, wsUrl, type TestSocket } from '../fixtures/ws-client.js'

const BASE_ENV = { THREAD_TASK_TIMEOUT_MS: '60000' }
const CHAT_TIMEOUT_MS = 2000
const GRACE_MS = 400
const IDLE_MS = 600

/**
 * One worker for every test, scripted by the chat's content: `silent…` gets no answer,
 * `fail…` a worker error, `hold:<n>…` waits until n held requests have arrived and then
 * answers them all (so they are provably in flight together); anything else is echoed.
 */
const held: Array<() => void> = []
const dispatch: Behaviour = async (request) => {
  if (request.content.startsWith('silent')) return []
  // 20 numbered chunks, paced like a model, each with its seq; then done.
  if (request.content.startsWith('slow')) {
    const deltas = Array.from({ length: 20 }, (_, i) => `c${i + 1} `)
    return [...deltas.flatMap((d, i) => [chunk(request, d, i + 1), pause(15)]), done(request, deltas.join(''))]
  }
  // Two chunks, then nothing: a worker that froze mid-answer.
  if (request.content.startsWith('freeze')) return [chunk(request, 'one ', 1), chunk(request, 'two ', 2)]
  // A QoS 1 redelivery: the same seq twice.
  if (request.content.startsWith('twice')) return [chunk(request, 'a', 1), chunk(request, 'a', 1), chunk(request, 'b', 2), done(request, 'ab')]
  if (request.content.startsWith('fail')) return [chunk(request, 'partial '), failure(request, 'model exploded')]
  const hold = /^hold:(\d+)/.exec(request.content)
  if (hold !== null) {
    const n = Number(hold[1])
    await new Promise<void>((resolve) => {
      held.push(resolve)
      if (held.length >= n) for (const release of held.splice(0)) release()
    })
    return [chunk(request, `${request.request_id.slice(0, 4)}-a `), chunk(request, 'b'), done(request, `${request.request_id.slice(0, 4)}-a b`)]
  }
  return echo(request)
}

const broker = await startTestBroker()
t.teardown(() => broker.close())
const worker = await startScriptedWorker({ url: broker.url, behaviour: dispatch })
t.teardown(() => worker.stop())
/** A second broker and gateway with a per-session cap of 1, started with the first; the last test kills its broker. */
const broker2 = await startTestBroker()
t.teardown(() => broker2.close())
let worker2: ScriptedWorker = await startScriptedWorker({ url: broker2.url, behaviour: dispatch })
t.teardown(() => worker2.stop())
const startG2 = startGateway(t, {
  ...BASE_ENV,
  MQTT_URL: broker2.url,
  MAX_PENDING_PER_SESSION: '1',
  CHAT_TIMEOUT_MS: '5000',
  MQTT_BACKOFF_BASE_MS: '50',
  MQTT_BACKOFF_CAP_MS: '500',
  MQTT_CONNECT_TIMEOUT_MS: '1000',
  MQTT_MAX_RECONNECT_ATTEMPTS: '1000'
})

const [gw, g2] = await Promise.all([
  startGateway(t, { ...BASE_ENV, MQTT_URL: broker.url, CHAT_TIMEOUT_MS: String(CHAT_TIMEOUT_MS), STREAM_RESUME_GRACE_MS: String(GRACE_MS), CHAT_IDLE_TIMEOUT_MS: String(IDLE_MS) }),
  startG2
])
await waitFor(() => gw.tether.link.isUp && g2.tether.link.isUp, { what: 'links up' })

async function chatSocket (t: Test, g: Gateway = gw): Promise<TestSocket> {
  return await connect(t, wsUrl(g.port, `/api/chatbot/ws?token=${g.token}`))
}

function chat (id: string, sessionId: string, content: string): Record<string, unknown> {
  return { type: 'chat', id, session_id: sessionId, content }
}

/** Waits for the done or error frame of chat `id` and returns it with the chunks before it. */
async function outcome (s: TestSocket, id: string, timeoutMs = 5000): Promise<{ end: any, chunks: string[] }> {
  const end = await s.next(`the end of chat ${id}`, (f) => f.id === id && (f.type === 'done' || f.type === 'error'), timeoutMs)
  const chunks = s.frames.filter((f) => f.type === 'chunk' && f.id === id).map((f) => f.delta)
  return { end, chunks }
}

async function counter (g: Gateway, name: string, labels: Record<string, string>): Promise<() => Promise<number>> {
  const before = await g.metric(name, labels)
  return async () => (await g.metric(name, labels)) - before
}

t.test('a chat streams chunks and then done with the stored assistant message_id', async (t) => {
  const sessionId = await gw.sessionId('basic')
  const s = await chatSocket(t)
  s.send(chat('c1', sessionId, 'hello there world'))
  const { end, chunks } = await outcome(s, 'c1')
  t.same(chunks, ['echo: ', 'hello ', 'there ', 'world'], 'the worker\'s deltas, in order')
  const start = s.frames.find((f) => f.id === 'c1')
  t.same(Object.keys(start).sort(), ['id', 'request_id', 'type'], 'the first frame of a chat is start, naming its request')
  t.equal(start.type, 'start')
  t.same(s.frames.filter((f) => f.type === 'chunk' && f.id === 'c1').map((f) => [f.seq, f.request_id]), [1, 2, 3, 4].map((n) => [n, start.request_id]), 'chunks numbered from 1')
  t.same(Object.keys(end).sort(), ['content', 'id', 'message_id', 'request_id', 'type'])
  t.equal(end.type, 'done')
  t.equal(end.content, 'echo: hello there world')
  t.equal(end.content, chunks.join(''), 'done.content is the chunks joined')
  const history = await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)
  t.equal(history.status, 200)
  const assistant = history.json.find((m: any) => m.id === end.message_id)
  t.ok(assistant, 'message_id names a stored message')
  t.same({ role: assistant?.role, content: assistant?.content }, { role: 'assistant', content: 'echo: hello there world' })
  t.same(history.json.map((m: any) => [m.role, m.content]), [['user', 'hello there world'], ['assistant', 'echo: hello there world']], 'both turns stored once')
  t.equal(gw.tether.pending.size, 0)
})

t.test('several chats are in flight on one socket at once, each answered under its own id', async (t) => {
  const a = await gw.sessionId('many-a')
  const b = await gw.sessionId('many-b')
  const s = await chatSocket(t)
  // Held by the worker until all three have arrived: they are in flight together.
  s.send(chat('first', a, 'hold:3 one'))
  s.send(chat('second', a, 'hold:3 two'))
  s.send(chat('third', b, 'hold:3 three'))
  const ends = await Promise.all(['first', 'second', 'third'].map(async (id) => await outcome(s, id)))
  const ids = new Set<string>()
  for (const [i, { end, chunks }] of ends.entries()) {
    t.equal(end.type, 'done', `chat ${i} done`)
    t.equal(chunks.join(''), end.content, `chat ${i}: its own chunks, none of the others'`)
    ids.add(end.message_id)
  }
  t.equal(ids.size, 3, 'three distinct stored messages')
  t.equal(new Set(ends.map((e) => e.end.content)).size, 3, 'three distinct replies')
})

t.test('a second chat with an id already in flight on the socket is answered with an error frame', async (t) => {
  const sessionId = await gw.sessionId('dup')
  const s = await chatSocket(t)
  const published = worker.received.length
  s.send(chat('same', sessionId, 'hold:2 first'))
  await waitFor(() => worker.received.length === published + 1, { what: 'the first chat published' })
  s.send(chat('same', sessionId, 'hold:2 duplicate'))
  const error = await s.next('the duplicate\'s error', (f) => f.type === 'error')
  t.same({ type: error.type, id: error.id, error: error.error }, { type: 'error', id: 'same', error: 'invalid_request' })
  t.match(error.message, /already in flight/)
  t.equal(worker.received.length, published + 1, 'the duplicate was not published')
  // Let the held chat go with a partner on another socket, and check the first is unharmed.
  const other = await chatSocket(t)
  other.send(chat('partner', await gw.sessionId('dup-partner'), 'hold:2 partner'))
  const { end } = await outcome(s, 'same')
  t.equal(end.type, 'done', 'the original chat still completes')
  t.equal((await outcome(other, 'partner')).end.type, 'done')
  s.send(chat('same', sessionId, 'again'))
  t.equal((await outcome(s, 'same')).end.type, 'done', 'the id is free again once its chat ended')
})

t.test('invalid chat frames are answered with invalid_request error frames and nothing is published', async (t) => {
  const sessionId = await gw.sessionId('invalid')
  const s = await chatSocket(t)
  const rejected = await counter(gw, 'tether_ws_frames_rejected_total', { endpoint: 'chat', reason: 'invalid' })
  const published = worker.received.length
  const cases: Array<[string, unknown, string | undefined]> = [
    ['malformed JSON', '{"type":"chat",', undefined],
    ['not an object', '[1,2]', undefined],
    ['an unknown type', { type: 'state', data: 1 }, undefined],
    ['a missing id', { type: 'chat', session_id: sessionId, content: 'x' }, undefined],
    ['an id with a space', chat('a b', sessionId, 'x'), undefined],
    ['a numeric id', { type: 'chat', id: 7, session_id: sessionId, content: 'x' }, undefined],
    ['an id of 65 characters', chat('i'.repeat(65), sessionId, 'x'), undefined],
    ['a session id with +', chat('v1', 'a+b', 'x'), 'v1'],
    ['a session id with /', chat('v2', 'a/b', 'x'), 'v2'],
    ['a missing session id', { type: 'chat', id: 'v3', content: 'x' }, 'v3'],
    ['numeric content', { type: 'chat', id: 'v4', session_id: sessionId, content: 42 }, 'v4'],
    ['missing content', { type: 'chat', id: 'v5', session_id: sessionId }, 'v5'],
    ['content with NUL', chat('v6', sessionId, 'a\u0000b'), 'v6'],
    ['content with a lone surrogate', chat('v7', sessionId, 'a\ud800b'), 'v7']
  ]
  for (const [name, frame, id] of cases) {
    s.send(frame)
    const error = await s.next(`the error for ${name}`)
    t.equal(error.type, 'error', `${name}: error frame`)
    t.equal(error.error, 'invalid_request', `${name}: invalid_request`)
    t.type(error.message, 'string')
    t.equal(error.id, id, `${name}: ${id === undefined ? 'no id' : 'the chat\'s id'}`)
  }
  t.equal(worker.received.length, published, 'none of them was published')
  t.equal(await rejected(), 11, 'the invalid fields counted as rejected frames (reason invalid)')
  s.send(chat('valid', sessionId, 'after all that'))
  t.equal((await outcome(s, 'valid')).end.type, 'done', 'the socket still chats')
})

t.test('a chat on another user\'s or an unknown session is answered session_not_found', async (t) => {
  const other = await gw.newUser('chat-other')
  const theirs = await gw.request('POST', '/api/chatbot/sessions', JSON.stringify({ title: 'theirs' }), { token: other.token })
  const s = await chatSocket(t)
  const published = worker.received.length
  s.send(chat('theirs', theirs.json.id, 'hello'))
  s.send(chat('unknown', randomUUID(), 'hello'))
  for (const id of ['theirs', 'unknown']) {
    const { end } = await outcome(s, id)
    t.same([end.type, end.error], ['error', 'session_not_found'], id)
  }
  t.equal(worker.received.length, published, 'nothing published')
  const history = await gw.request('GET', `/api/chatbot/sessions/${String(theirs.json.id)}/messages`, undefined, { token: other.token })
  t.same(history.json, [], 'nothing stored in the other user\'s session')
})

t.test('a worker error after a chunk is an llm_error error frame without the worker\'s text', async (t) => {
  const s = await chatSocket(t)
  s.send(chat('boom', await gw.sessionId('fail'), 'fail please'))
  const { end, chunks } = await outcome(s, 'boom')
  t.same(chunks, ['partial '])
  t.same([end.type, end.id, end.error], ['error', 'boom', 'llm_error'])
  t.notMatch(end.message, /model exploded/)
  t.equal(gw.tether.pending.size, 0)
})

t.test('a silent worker is an llm_timeout error frame at the chat deadline', async (t) => {
  const s = await chatSocket(t)
  const timedOut = await counter(gw, 'tether_chat_requests_total', { outcome: 'timed_out' })
  const started = Date.now()
  s.send(chat('quiet', await gw.sessionId('silent'), 'silent please'))
  const { end } = await outcome(s, 'quiet', CHAT_TIMEOUT_MS + 5000)
  const took = Date.now() - started
  t.same([end.type, end.error], ['error', 'llm_timeout'])
  t.ok(took >= CHAT_TIMEOUT_MS - 50, `at the deadline (${took} ms for ${CHAT_TIMEOUT_MS} ms)`)
  t.equal(await timedOut(), 1)
  t.equal(gw.tether.pending.size, 0)
})

t.test('closing the socket mid-chat leaves its chats waiting for the grace, then cancels them and tells the worker', async (t) => {
  const s = await chatSocket(t)
  const cancelled = await counter(gw, 'tether_chat_requests_total', { outcome: 'cancelled' })
  const sessionId = await gw.sessionId('cancel')
  s.send(chat('gone-1', sessionId, 'silent one'))
  s.send(chat('gone-2', sessionId, 'silent two'))
  await waitFor(() => gw.tether.pending.size === 2, { what: 'two chats in flight' })
  const ids = s.frames.filter((f) => f.type === 'start').map((f) => f.request_id)
  const closedAt = Date.now()
  await s.close()
  await waitFor(() => gw.tether.pending.size === 0, { timeoutMs: GRACE_MS + 1000, what: 'the chats cancelled after the grace (well before their deadline)' })
  t.ok(Date.now() - closedAt >= GRACE_MS - 50, 'not before the grace ran out')
  t.equal(await cancelled(), 2, 'counted as cancelled')
  await waitFor(() => ids.every((id) => worker.cancels.some((c) => c.request_id === id)), { what: 'the worker told' })
  t.same(worker.cancels.filter((c) => ids.includes(c.request_id)).map((c) => c.reason), ['client_gone', 'client_gone'])
})

t.test('a socket closed after 3 of 20 chunks and resumed on a new one with after_seq 3 gets the rest: no gap, no repeat', async (t) => {
  const sessionId = await gw.sessionId('resume')
  const first = await chatSocket(t)
  first.send(chat('r1', sessionId, 'slow please'))
  const third = await first.next('chunk 3', (f) => f.type === 'chunk' && f.id === 'r1' && f.seq === 3)
  const seen = first.frames.filter((f) => f.type === 'chunk' && f.id === 'r1' && f.seq <= 3)
  await first.close()
  const second = await chatSocket(t)
  second.send({ type: 'resume', id: 'again', request_id: third.request_id, after_seq: 3 })
  const { end, chunks } = await outcome(second, 'again')
  const resumed = second.frames.filter((f) => f.type === 'chunk' && f.id === 'again')
  t.same(resumed.map((f) => f.seq), Array.from({ length: 17 }, (_, i) => i + 4), 'seq 4 to 20, each once')
  t.equal(end.type, 'done')
  t.equal([...seen.map((f) => f.delta), ...chunks].join(''), end.content, 'the concatenated text is the worker\'s')
  t.notOk(worker.cancels.some((c) => c.request_id === third.request_id), 'the worker was never told to stop')
})

t.test('a resumed stream that has ended replays the rest and its end; a bad resume is a clear error frame', async (t) => {
  const sessionId = await gw.sessionId('resume-ended')
  const s = await chatSocket(t)
  s.send(chat('e1', sessionId, 'hello again'))
  const { end } = await outcome(s, 'e1')
  const requestId = s.frames.find((f) => f.type === 'start' && f.id === 'e1').request_id
  s.send({ type: 'resume', id: 'e2', request_id: requestId, after_seq: 1 })
  const again = await outcome(s, 'e2')
  t.same(again.chunks, ['hello ', 'again'])
  t.same([again.end.type, again.end.content], ['done', end.content])
  const other = await gw.newUser('resume-stranger')
  const stranger = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${other.token}`))
  stranger.send({ type: 'resume', id: 'x', request_id: requestId, after_seq: 0 })
  t.match(await stranger.next('an error', (f) => f.id === 'x'), { type: 'error', error: 'stream_not_found' }, 'another user\'s stream is not found')
  s.send({ type: 'resume', id: 'u', request_id: randomUUID(), after_seq: 0 })
  t.match(await s.next('an error', (f) => f.id === 'u'), { type: 'error', error: 'stream_not_found' }, 'an unknown id')
  for (const [id, after] of [['n1', -1], ['n2', 1.5], ['n3', '3'], ['n4', 99]] as const) {
    s.send({ type: 'resume', id, request_id: requestId, after_seq: after })
    t.match(await s.next(`an error for ${String(after)}`, (f) => f.id === id), { type: 'error', error: 'invalid_request' }, `after_seq ${JSON.stringify(after)}`)
  }
})

t.test('Stop: a cancel frame ends the chat with error cancelled, tells the worker, and keeps the partial text', async (t) => {
  const sessionId = await gw.sessionId('stop')
  const s = await chatSocket(t)
  s.send(chat('st', sessionId, 'slow please'))
  const second = await s.next('chunk 2', (f) => f.type === 'chunk' && f.id === 'st' && f.seq === 2)
  s.send({ type: 'cancel', request_id: second.request_id })
  const { end, chunks } = await outcome(s, 'st')
  t.same([end.type, end.error], ['error', 'cancelled'])
  await waitFor(() => worker.cancels.some((c) => c.request_id === second.request_id), { what: 'the worker told' })
  t.equal(worker.cancels.find((c) => c.request_id === second.request_id)?.reason, 'client_cancelled')
  await waitFor(async () => (await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)).json.length === 2, { what: 'the partial answer stored' })
  const history = await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)
  t.same(history.json.map((m: any) => [m.role, m.status]), [['user', 'complete'], ['assistant', 'cancelled']])
  t.equal(history.json[1].content, chunks.join(''), 'the stored text is what the user saw')
  s.send({ type: 'cancel', request_id: second.request_id })
  t.match(await s.next('already settled', (f) => f.type === 'error' && f.error === 'already_settled'), { request_id: second.request_id })
})

t.test('a worker that sends two chunks and goes silent ends in llm_stalled after CHAT_IDLE_TIMEOUT_MS, and is told to stop', async (t) => {
  const sessionId = await gw.sessionId('stall')
  const s = await chatSocket(t)
  const stalled = await counter(gw, 'tether_chat_requests_total', { outcome: 'stalled' })
  s.send(chat('fz', sessionId, 'freeze now'))
  const { end, chunks } = await outcome(s, 'fz', CHAT_TIMEOUT_MS + 2000)
  t.same(chunks, ['one ', 'two '])
  t.same([end.type, end.error], ['error', 'llm_stalled'])
  t.equal(await stalled(), 1)
  await waitFor(() => worker.cancels.some((c) => c.request_id === end.request_id && c.reason === 'stalled'), { what: 'cancel with reason stalled' })
  await waitFor(async () => (await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)).json.length === 2, { what: 'the partial answer stored' })
  const history = await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)
  t.same([history.json[1].status, history.json[1].content], ['stalled', 'one two '])
})

t.test('a flood of cancels for unknown streams gets one clear error frame each, and other sockets\' chats carry on', async (t) => {
  const flood = await chatSocket(t)
  const other = await chatSocket(t)
  other.send(chat('calm', await gw.sessionId('flood-calm'), 'slow please'))
  for (let i = 0; i < 30; i++) flood.send({ type: 'cancel', request_id: randomUUID() })
  await flood.next('30 error frames', () => flood.frames.filter((f) => f.error === 'stream_not_found').length === 30)
  t.ok(flood.frames.every((f) => f.type === 'error' && f.error === 'stream_not_found'), 'each one answered stream_not_found')
  flood.send({ type: 'cancel', request_id: 'a/b' })
  t.match(await flood.next('a bad id', (f) => f.error === 'invalid_request'), { type: 'error' })
  const { end } = await outcome(other, 'calm')
  t.equal(end.type, 'done', 'the other socket\'s chat finished')
})

t.test('a chunk redelivered with the same seq reaches the client once', async (t) => {
  const s = await chatSocket(t)
  s.send(chat('dup', await gw.sessionId('dup'), 'twice please'))
  const { end, chunks } = await outcome(s, 'dup')
  t.same(chunks, ['a', 'b'])
  t.equal(end.content, 'ab')
})

t.test('the per-session cap applies: a second chat in flight on the session is too_many_requests', async (t) => {
  const sessionId = await g2.sessionId('capped')
  const s = await chatSocket(t, g2)
  const published = worker2.received.length
  s.send(chat('one', sessionId, 'hold:2 one'))
  await waitFor(() => g2.tether.pending.size === 1, { what: 'the first chat in flight' })
  await waitFor(() => worker2.received.length === published + 1, { what: 'the first chat at the worker' })
  s.send(chat('two', sessionId, 'hold:2 two'))
  const { end } = await outcome(s, 'two')
  t.same([end.type, end.error], ['error', 'too_many_requests'])
  t.ok(end.retry_after_s >= 1, 'with retry_after_s, as Retry-After on HTTP')
  t.equal(worker2.received.length, published + 1, 'the refused chat was not published')
  // Another session is not capped: its chat releases the held one.
  s.send(chat('other', await g2.sessionId('uncapped'), 'hold:2 other'))
  t.equal((await outcome(s, 'one')).end.type, 'done')
  t.equal((await outcome(s, 'other')).end.type, 'done')
})

t.test('an id refused at once (cap reached) can be used again once the chat in flight ended', async (t) => {
  const sessionId = await g2.sessionId('reuse')
  const s = await chatSocket(t, g2)
  s.send(chat('holder', sessionId, 'hold:2 holder'))
  await waitFor(() => g2.tether.pending.size === 1, { what: 'the holder in flight' })
  s.send(chat('retry', sessionId, 'refused'))
  t.equal((await outcome(s, 'retry')).end.error, 'too_many_requests')
  s.send(chat('partner', await g2.sessionId('reuse-partner'), 'hold:2 partner'))
  t.equal((await outcome(s, 'holder')).end.type, 'done')
  // The client retries under the same id, as retry_after_s invites it to.
  s.send(chat('retry', sessionId, 'retried'))
  const { end } = await outcome(s, 'retry')
  t.equal(end.type, 'done', `the retry is chatted, not refused (got ${JSON.stringify(end)})`)
})

t.test('a chat refused by the per-session cap leaves no message in the session\'s history', async (t) => {
  // Both frames arrive together: the second passes the early cap check (nothing published
  // yet) and is refused only after its user message was stored.
  const sessionId = await g2.sessionId('cap-history')
  const s = await chatSocket(t, g2)
  s.send(chat('x1', sessionId, 'hold:2 kept'))
  s.send(chat('x2', sessionId, 'hold:2 refused'))
  t.equal((await outcome(s, 'x2')).end.error, 'too_many_requests')
  s.send(chat('x3', await g2.sessionId('cap-history-partner'), 'hold:2 partner'))
  t.equal((await outcome(s, 'x1')).end.type, 'done')
  const history = await g2.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)
  t.same(history.json.filter((m: any) => m.role === 'user').map((m: any) => m.content), ['hold:2 kept'], 'only the accepted chat\'s user message is stored')
})

t.test('with the broker link down a chat is answered llm_unavailable with retry_after_s, and the same id works once it is back', async (t) => {
  const sessionId = await g2.sessionId('link-down')
  const s = await chatSocket(t, g2)
  await worker2.stop()
  await broker2.kill()
  await waitFor(() => !g2.tether.link.isUp, { what: 'the link noticed the broker gone' })
  s.send(chat('down', sessionId, 'anyone there?'))
  const { end } = await outcome(s, 'down')
  t.same([end.type, end.id, end.error], ['error', 'down', 'llm_unavailable'])
  t.ok(end.retry_after_s >= 1, 'with retry_after_s')
  t.notOk(s.isClosed, 'the socket stays open')
  const history = await g2.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)
  t.same(history.json, [], 'nothing stored for a chat that could not be sent')

  await broker2.restart()
  worker2 = await startScriptedWorker({ url: broker2.url, behaviour: dispatch })
  await waitFor(() => g2.tether.link.isUp, { timeoutMs: 10_000, what: 'the link back' })
  s.send(chat('down', sessionId, 'back?'))
  const again = await outcome(s, 'down')
  t.equal(again.end.type, 'done', `the same id chats once the link is back (got ${JSON.stringify(again.end)})`)
})
