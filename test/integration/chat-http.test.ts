import t, { type Test } from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { chunk, done, echo, fail, failure, raw, silent, startScriptedWorker, type Behaviour } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

async function setup (t: Test, behaviour: Behaviour, env: Record<string, string> = {}): Promise<Gateway> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour })
  t.teardown(() => worker.stop())
  const gw = await startGateway(t, { MQTT_URL: broker.url, ...env })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 5000, what: 'link connected' })
  return gw
}

function expectError (t: Test, answer: { status: number, json: any, headers: Record<string, unknown> }, status: number, code: string): void {
  t.equal(answer.status, status, `status ${status}`)
  t.equal(answer.json?.error, code, `error ${code}`)
  t.type(answer.json?.message, 'string')
  t.type(answer.json?.request_id, 'string')
  t.equal(answer.headers['x-request-id'], answer.json?.request_id, 'x-request-id matches the body')
}

t.test('a chat is answered with the worker\'s done content', async (t) => {
  const gw = await setup(t, echo)
  const answer = await gw.chat('s1', 'hello there')
  t.equal(answer.status, 200)
  t.equal(answer.json.session_id, await gw.sessionId('s1'))
  t.same(answer.json.reply, { role: 'assistant', content: 'echo: hello there' })
  t.type(answer.json.message_id, 'string')
  t.type(answer.json.latency_ms, 'number')
  t.equal(gw.tether.pending.size, 0)
  t.equal(await gw.metric('tether_chat_requests_total', { outcome: 'done' }), 1)
})

t.test('a worker error is a 502 llm_error whose message does not pass on the worker\'s text', async (t) => {
  const gw = await setup(t, fail('model exploded at http://10.1.2.3:8000 key sk-abc123'))
  const answer = await gw.chat('s1', 'hi')
  expectError(t, answer, 502, 'llm_error')
  t.equal(answer.json.message, 'The LLM worker reported an error.')
  t.notMatch(answer.text, /exploded|10\.1\.2\.3|sk-abc/, 'the model server\'s detail stays in the logs')
  t.equal(gw.tether.pending.size, 0)
})

t.test('a silent worker gets 504 llm_timeout at the deadline and nothing stays pending', async (t) => {
  const gw = await setup(t, silent, { CHAT_TIMEOUT_MS: '300' })
  const answer = await gw.chat('s1', 'hi')
  expectError(t, answer, 504, 'llm_timeout')
  t.ok(answer.ms >= 290, `answered at the deadline (${Math.round(answer.ms)} ms)`)
  t.equal(gw.tether.pending.size, 0)
  t.equal(await gw.metric('tether_chat_requests_total', { outcome: 'timed_out' }), 1)
})

t.test('malformed, duplicate and unknown replies are dropped and counted, and the first done wins', async (t) => {
  const gw = await setup(t, raw((r) => [
    'not json at all',
    JSON.stringify({ v: 2, request_id: r.request_id, type: 'done', content: 'wrong version' }),
    JSON.stringify({ v: 1, request_id: r.request_id, type: 'shout', content: 'unknown type' }),
    JSON.stringify({ v: 1, request_id: 'nobody-asked', type: 'done', content: 'unknown id' }),
    JSON.stringify(chunk(r, 'first ')),
    JSON.stringify(done(r, 'first answer')),
    JSON.stringify(done(r, 'second answer')),
    JSON.stringify(failure(r, 'late error'))
  ]))
  const answer = await gw.chat('s1', 'hi')
  t.equal(answer.status, 200)
  t.equal(answer.json.reply.content, 'first answer')
  await waitFor(async () => await gw.metric('tether_mqtt_replies_dropped_total', { reason: 'duplicate' }) === 2, { timeoutMs: 3000, what: 'two duplicates counted' })
  t.equal(await gw.metric('tether_mqtt_replies_dropped_total', { reason: 'malformed' }), 3)
  t.equal(await gw.metric('tether_mqtt_replies_dropped_total', { reason: 'unknown' }), 1)
  const health = await gw.request('GET', '/api/health')
  t.equal(health.json.status, 'healthy', 'garbage replies do not hurt health')
})

t.test('more chats in flight on one session than allowed get 429 with Retry-After', async (t) => {
  const gw = await setup(t, silent, { MAX_PENDING_PER_SESSION: '2', CHAT_TIMEOUT_MS: '400' })
  const held = [gw.chat('busy', 'one'), gw.chat('busy', 'two')]
  await waitFor(() => gw.tether.pending.size === 2, { timeoutMs: 3000, what: 'two in flight' })
  const third = await gw.chat('busy', 'three')
  expectError(t, third, 429, 'too_many_requests')
  t.ok(Number(third.headers['retry-after']) >= 1, 'Retry-After set')
  const other = gw.chat('other-session', 'fine')
  await waitFor(() => gw.tether.pending.size === 3, { timeoutMs: 3000, what: 'another session is not capped' })
  for (const a of await Promise.all([...held, other])) t.equal(a.status, 504)
  t.equal(gw.tether.pending.size, 0)
})

t.test('the total cap answers 429 across sessions', async (t) => {
  const gw = await setup(t, silent, { MAX_PENDING: '1', CHAT_TIMEOUT_MS: '300' })
  const first = gw.chat('a', 'one')
  await waitFor(() => gw.tether.pending.size === 1, { timeoutMs: 3000, what: 'one in flight' })
  expectError(t, await gw.chat('b', 'two'), 429, 'too_many_requests')
  t.equal((await first).status, 504)
})

t.test('a client that goes away cancels its chat', async (t) => {
  const gw = await setup(t, silent)
  const { answer, abort } = gw.chatAbortable('s1', 'hi')
  await waitFor(() => gw.tether.pending.size === 1, { timeoutMs: 3000, what: 'chat in flight' })
  abort()
  t.equal(await answer, 'aborted')
  await waitFor(() => gw.tether.pending.size === 0, { timeoutMs: 3000, what: 'chat freed after abort' })
  t.equal(await gw.metric('tether_chat_requests_total', { outcome: 'cancelled' }), 1)
})

t.test('bad input gets the contract error JSON and the process stays healthy', async (t) => {
  const gw = await setup(t, echo, { MAX_BODY_BYTES: '1024' })
  const s1 = await gw.sessionId('s1')
  const post = (body: string | Buffer): ReturnType<Gateway['request']> =>
    gw.request('POST', '/api/chatbot/messages', body, { headers: { 'content-type': 'application/json' } })
  expectError(t, await post('{"session_id":"s1",'), 400, 'invalid_request')
  expectError(t, await post('[1,2]'), 400, 'invalid_request')
  expectError(t, await post('"just a string"'), 400, 'invalid_request')
  expectError(t, await post(JSON.stringify({ session_id: s1, content: 42 })), 400, 'invalid_request')
  expectError(t, await post(JSON.stringify({ session_id: 7, content: 'hi' })), 400, 'invalid_request')
  expectError(t, await post(JSON.stringify({ content: 'hi' })), 400, 'invalid_request')
  expectError(t, await post(JSON.stringify({ session_id: s1, content: '' })), 400, 'invalid_request')
  for (const bad of ['a/b', 'llm/#', 'a+b', '', 'x'.repeat(65), 'spaces here']) {
    const a = await post(JSON.stringify({ session_id: bad, content: 'hi' }))
    expectError(t, a, 400, 'invalid_request')
    t.match(a.json.message, /session_id/)
  }
  expectError(t, await post(JSON.stringify({ session_id: s1, content: 'nul\u0000here' })), 400, 'invalid_request')
  expectError(t, await post(`{"session_id":"${s1}","content":"lone \\ud800 surrogate"}`), 400, 'invalid_request')
  expectError(t, await post(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), 400, 'invalid_request')
  expectError(t, await post(JSON.stringify({ session_id: s1, content: 'x'.repeat(2000) })), 413, 'payload_too_large')
  expectError(t, await gw.request('GET', '/no/such/route'), 404, 'not_found')
  const wrongMethod = await gw.request('GET', '/api/chatbot/messages')
  expectError(t, wrongMethod, 405, 'method_not_allowed')
  t.match(String(wrongMethod.headers.allow), /POST/)
  // SQL-looking text is just text.
  const sql = await post(JSON.stringify({ session_id: s1, content: "'; DROP TABLE users; --" }))
  t.equal(sql.status, 200)
  t.equal(sql.json.reply.content, "echo: '; DROP TABLE users; --")
  const health = await gw.request('GET', '/api/health')
  t.equal(health.status, 200)
  t.equal(health.json.status, 'healthy')
  t.equal(gw.tether.pending.size, 0)
})

t.test('health, readiness and metrics have the contract shapes', async (t) => {
  const gw = await setup(t, echo)
  const health = await gw.request('GET', '/api/health')
  t.equal(health.status, 200)
  t.match(health.json, {
    status: 'healthy',
    timestamp: String,
    uptime_s: Number,
    mqtt: { state: 'connected', connected: true, last_activity_seconds_ago: Number, reconnect_attempts: 0, pending_requests: 0 },
    db: { status: 'up', pool: { total: Number, idle: Number, in_use: Number, waiting: Number } },
    event_loop: { lag_p99_ms: Number },
    issues: []
  })
  t.ok(!Number.isNaN(Date.parse(health.json.timestamp)), 'timestamp is ISO-8601')
  const mqtt = await gw.request('GET', '/api/health/mqtt')
  t.match(mqtt.json, {
    state: 'connected',
    connected: true,
    client_id: String,
    last_activity: { timestamp: String, seconds_ago: Number },
    reconnection: { attempts: 0, max_attempts: 10, next_attempt_in_ms: 0 },
    pending_requests: { total: 0, sessions: 0, max_per_session: 0, by_session: {} },
    subscribers: { hint_sessions: 0, total_websockets: 0 }
  })
  t.equal((await gw.request('GET', '/livez')).status, 200)
  t.equal((await gw.request('GET', '/readyz')).status, 200)
  const metrics = await gw.request('GET', '/metrics')
  t.equal(metrics.status, 200)
  t.match(metrics.headers['content-type'], /text\/plain/)
  for (const name of ['tether_mqtt_link_state', 'tether_mqtt_reconnects_total', 'tether_mqtt_last_activity_age_seconds', 'tether_chat_pending_requests', 'tether_chat_requests_total', 'tether_chat_request_duration_seconds', 'process_cpu_user_seconds_total']) {
    t.match(metrics.text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} exported`)
  }
  t.match(metrics.text, /^tether_mqtt_link_state\{state="connected"\} 1$/m)
})
