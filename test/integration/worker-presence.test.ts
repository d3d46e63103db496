/**
 * Announced LLM workers (contract v1.1, "Workers: presence, acknowledgement, capacity") through
 * the real gateway and a real broker (aedes, or a private Mosquitto with MQTT_TEST_URL set),
 * with scripted workers in this process: where chats go, what a silent, busy or missing worker
 * costs the user, and what bad presence input does (nothing but a count). The same with the
 * reference worker as a process stopped by SIGSTOP is in worker-sigstop.test.ts.
 */
import mqtt from 'mqtt'
import t, { type Test } from 'tap'
import { startTestBroker, type TestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { chunk, done, echo, pause, startScriptedWorker, type Behaviour, type ScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

async function broker (t: Test): Promise<TestBroker> {
  const b = await startTestBroker()
  t.teardown(() => b.close())
  return b
}

async function worker (t: Test, b: TestBroker, behaviour: Behaviour, announce?: { capacity: number, heartbeatMs?: number, ack?: boolean, takes?: number }, clientId?: string): Promise<ScriptedWorker> {
  const w = await startScriptedWorker({ url: b.url, behaviour, ...(announce !== undefined ? { announce } : {}), ...(clientId !== undefined ? { clientId } : {}) })
  t.teardown(() => w.stop())
  return w
}

async function gateway (t: Test, b: TestBroker, env: Record<string, string> = {}): Promise<Gateway> {
  const gw = await startGateway(t, { MQTT_URL: b.url, CHAT_TIMEOUT_MS: '20000', MAX_PENDING_PER_SESSION: '100', MAX_PENDING_PER_USER: '100', ...env })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  return gw
}

async function workersOnline (gw: Gateway, n: number): Promise<void> {
  await waitFor(async () => (await gw.request('GET', '/api/health/workers')).json.online === n, { what: `${n} workers online` })
}

/** Streams one chunk, waits, then finishes: a chat that is visibly in flight for `ms`. */
const slow = (ms: number): Behaviour => (request) => [chunk(request, 'first ', 1), pause(ms), done(request, 'first done')]

t.test('no worker ever started, presence required: 503 no_workers at once, with Retry-After, and health says why', async (t) => {
  const b = await broker(t)
  // A long accept timeout and deadline: an answer before them cannot have come from a timer.
  const gw = await gateway(t, b, { WORKER_PRESENCE: 'required', CHAT_ACCEPT_TIMEOUT_MS: '30000' })
  const a = await gw.chat('none', 'anyone there?')
  t.equal(a.status, 503)
  t.equal(a.json.error, 'no_workers')
  t.equal(a.json.message, 'No LLM worker is online.')
  t.equal(a.headers['retry-after'], '1')
  t.ok(a.ms < 5000, `answered without waiting for a timer (${Math.round(a.ms)} ms)`)
  t.equal(await gw.metric('tether_chat_no_workers_total', { reason: 'none' }), 1)
  t.equal(gw.tether.pending.size, 0, 'nothing pending')
  const health = await gw.request('GET', '/api/health')
  t.equal(health.json.status, 'degraded')
  t.same(health.json.workers, { online: 0, capacity: 0, in_flight: 0 })
  t.ok(health.json.issues.includes('no LLM worker online'))
  const status = await gw.request('GET', '/api/status')
  t.match(status.json.workers, { mode: 'required', announced: false, online: 0 })
  t.ok(status.json.outage.some((line: string) => line.startsWith('No LLM worker online')), 'the status page shows it as an outage')
  // The user's message was refused before it was stored.
  const messages = await gw.request('GET', `/api/chatbot/sessions/${await gw.sessionId('none')}/messages`)
  t.same(messages.json.items ?? messages.json, [])
})

t.test('an announced worker gets its chats on its own topic, acknowledges them, and is listed with its capacity', async (t) => {
  const b = await broker(t)
  const w = await worker(t, b, echo, { capacity: 3, heartbeatMs: 200 }, 'worker-listed')
  const gw = await gateway(t, b)
  await workersOnline(gw, 1)
  const a = await gw.chat('listed', 'hello there')
  t.equal(a.status, 200, a.text)
  t.equal(a.json.reply.content, 'echo: hello there')
  t.same(w.received.map((r) => r.content), ['hello there'])
  const list = await gw.request('GET', '/api/health/workers')
  t.match(list.json, { mode: 'auto', online: 1, suspect: 0, offline: 0, capacity: 3, in_flight: 0 })
  t.match(list.json.workers, [{ worker_id: 'worker-listed', state: 'online', draining: false, capacity: 3, in_flight: 0, heartbeat_ms: 200 }])
  t.same((await gw.request('GET', '/api/health')).json.workers, { online: 1, capacity: 3, in_flight: 0 })
  t.equal(await gw.metric('tether_workers', { state: 'online' }), 1)
  t.equal(await gw.metric('tether_workers_capacity'), 3)
  t.match((await gw.request('GET', '/api/status')).json, { workers: { mode: 'auto', announced: true, online: 1, capacity: 3 }, outage: [] })
})

t.test('capacities 1 and 8 under 16 concurrent chats: no worker ever holds more than its capacity; the rest get no_workers at once', async (t) => {
  const b = await broker(t)
  const small = await worker(t, b, slow(400), { capacity: 1, heartbeatMs: 200 })
  const large = await worker(t, b, slow(400), { capacity: 8, heartbeatMs: 200 })
  const gw = await gateway(t, b)
  await workersOnline(gw, 2)
  for (let i = 0; i < 16; i++) await gw.sessionId(`cap-${i}`)
  const answers = await Promise.all(Array.from({ length: 16 }, async (_, i) => await gw.chat(`cap-${i}`, `chat ${i}`)))
  const ok = answers.filter((a) => a.status === 200).length
  const refused = answers.filter((a) => a.status === 503 && a.json.error === 'no_workers')
  t.equal(ok + refused.length, 16, 'every chat answered 200 or no_workers')
  t.ok(ok >= 9, `the nine places were used (${ok} answered)`)
  t.ok(refused.every((a) => a.json.message === 'Every LLM worker is at capacity; retry shortly.'))
  t.ok(small.maxHolding <= 1, `the capacity-1 worker held at most 1 (${small.maxHolding})`)
  t.ok(large.maxHolding <= 8, `the capacity-8 worker held at most 8 (${large.maxHolding})`)
  t.equal(small.busy + large.busy, 0)
  await waitFor(() => gw.tether.pending.size === 0, { what: 'nothing pending' })
})

t.test('busy is retried once elsewhere; busy with nowhere else to go is no_workers', async (t) => {
  const b = await broker(t)
  // Claims room for 8 and takes none: every chat it is offered comes back `busy`.
  const liar = await worker(t, b, echo, { capacity: 8, heartbeatMs: 200, takes: 0 }, 'worker-a-liar')
  const gw = await gateway(t, b)
  await workersOnline(gw, 1)
  const alone = await gw.chat('busy-alone', 'nobody takes this')
  t.equal(alone.status, 503)
  t.equal(alone.json.error, 'no_workers')
  t.equal(liar.busy, 1)

  const honest = await worker(t, b, echo, { capacity: 8, heartbeatMs: 200 }, 'worker-b-honest')
  await workersOnline(gw, 2)
  const answers: HttpAnswer[] = []
  for (let i = 0; i < 6; i++) answers.push(await gw.chat('busy', `chat ${i}`))
  t.ok(answers.every((a) => a.status === 200), answers.map((a) => a.status).join(','))
  t.ok(liar.busy >= 2, `the busy worker was tried (${liar.busy} busy)`)
  t.equal(honest.received.length, 6, 'the honest worker answered all of them')
  t.equal(await gw.metric('tether_chat_moved_total', { reason: 'busy' }), liar.busy - 1)
})

t.test('a worker that goes silent: acknowledged chats end 503 worker_lost within 3 intervals; alone, new chats get no_workers; back, chats flow', async (t) => {
  const b = await broker(t)
  // Holds the first chats long; answers at once after it is back.
  const w = await worker(t, b, (request) => request.content === 'back?' ? echo(request) : slow(60_000)(request), { capacity: 4, heartbeatMs: 200 }, 'worker-freezes')
  const gw = await gateway(t, b, { CHAT_ACCEPT_TIMEOUT_MS: '30000' })
  await workersOnline(gw, 1)
  const inFlight = [gw.chat('lost-1', 'one'), gw.chat('lost-2', 'two')]
  await waitFor(() => w.holding === 2, { what: 'both chats taken' })
  const frozenAt = performance.now()
  w.freeze()
  const lost = await Promise.all(inFlight)
  const waited = performance.now() - frozenAt
  for (const a of lost) {
    t.equal(a.status, 503)
    t.equal(a.json.error, 'worker_lost')
    t.equal(a.headers['retry-after'], '1')
  }
  t.ok(waited < 5000, `answered after ${Math.round(waited)} ms, long before the 20 s deadline`)
  t.equal(await gw.metric('tether_chat_cancels_sent_total', { reason: 'worker_lost' }), 2, 'the worker is told, in case it comes back')
  t.equal(await gw.metric('tether_chat_requests_total', { outcome: 'worker_lost' }), 2)

  const none = await gw.chat('lost-3', 'anyone?')
  t.equal(none.status, 503)
  t.equal(none.json.error, 'no_workers')
  t.match((await gw.request('GET', '/api/health/workers')).json.workers, [{ worker_id: 'worker-freezes', state: 'offline' }])

  w.thaw()
  await workersOnline(gw, 1)
  const back = await gw.chat('lost-4', 'back?')
  t.equal(back.status, 200, back.text)
})

t.test('a worker that does not acknowledge: the chat moves to another worker after CHAT_ACCEPT_TIMEOUT_MS', async (t) => {
  const b = await broker(t)
  // First in the registry and never answering: it is chosen first on a tie.
  const mute = await worker(t, b, () => [], { capacity: 4, heartbeatMs: 200, ack: false }, 'worker-a-mute')
  const gw = await gateway(t, b, { CHAT_ACCEPT_TIMEOUT_MS: '300' })
  await workersOnline(gw, 1)
  const other = await worker(t, b, echo, { capacity: 4, heartbeatMs: 200 }, 'worker-b-other')
  await workersOnline(gw, 2)
  const answers = await Promise.all([gw.chat('mute-1', 'one'), gw.chat('mute-2', 'two')])
  t.ok(answers.every((a) => a.status === 200), answers.map((a) => a.text).join(' | '))
  t.ok(mute.received.length >= 1, 'the mute worker was tried')
  t.equal(await gw.metric('tether_chat_moved_total', { reason: 'no_ack' }), mute.received.length)
  t.equal(other.received.length, 2)
  // The mute worker is told to drop what moved away from it.
  await waitFor(() => mute.cancels.length === mute.received.length, { what: 'cancels at the mute worker' })
})

t.test('a v1 worker (no presence, no ack, no seq) works as before, on the shared topic', async (t) => {
  const b = await broker(t)
  const v1 = await worker(t, b, echo)
  const gw = await gateway(t, b)
  const a = await gw.chat('v1', 'old school')
  t.equal(a.status, 200)
  t.equal(a.json.reply.content, 'echo: old school')
  t.same(v1.received.map((r) => r.content), ['old school'])
  const list = await gw.request('GET', '/api/health/workers')
  t.match(list.json, { mode: 'auto', online: 0, workers: [] })
  t.equal((await gw.request('GET', '/api/health')).json.status, 'healthy')
})

t.test('bad input on the presence topics and stray acks are dropped and counted; nothing crashes and chats still flow', async (t) => {
  const b = await broker(t)
  await worker(t, b, echo)
  const gw = await gateway(t, b, { WORKER_REGISTRY_MAX: '2' })
  const peer = await mqtt.connectAsync(b.url, { protocolVersion: 4, reconnectPeriod: 0 })
  t.teardown(() => peer.endAsync(true))
  const beat = (id: string, fields: Record<string, unknown> = {}): string => JSON.stringify({ v: 1, worker_id: id, status: 'online', capacity: 2, in_flight: 0, heartbeat_ms: 60_000, ...fields })
  const bad: Array<[string, string | Buffer]> = [
    ['llm/workers/w1', 'not json'],
    ['llm/workers/w1', Buffer.from([0xff, 0xfe, 0x00])],
    ['llm/workers/w1', '['.repeat(5000) + ']'.repeat(5000)],
    ['llm/workers/w1', '42'],
    ['llm/workers/w1', JSON.stringify({ v: 2, worker_id: 'w1', status: 'online' })],
    ['llm/workers/w1', beat('w1', { status: 'sleeping' })],
    ['llm/workers/w1', beat('w1', { capacity: '8' })]
  ]
  const impostor: Array<[string, string]> = [['llm/workers/w1', beat('someone-else')]]
  const absurd: Array<[string, string]> = [
    ['llm/workers/w1', beat('w1', { capacity: 1e12 })],
    ['llm/workers/w1', beat('w1', { capacity: -1 })],
    ['llm/workers/w1', beat('w1', { heartbeat_ms: 5 })],
    ['llm/workers/w1', beat('w1', { in_flight: 1.5 })]
  ]
  for (const [topic, payload] of [...bad, ...impostor, ...absurd]) await peer.publishAsync(topic, payload, { qos: 1 })
  // A stray ack on the gateway's reply topic, for a request nobody sent.
  await peer.publishAsync(`llm/chat/reply/${gw.tether.link.clientId}`, JSON.stringify({ v: 1, request_id: 'no-such-request', type: 'ack', worker_id: 'w1' }), { qos: 1 })
  await waitFor(async () => await gw.metric('tether_mqtt_replies_dropped_total', { reason: 'unknown_ack' }) === 1, { what: 'the stray ack counted' })
  t.equal(await gw.metric('tether_worker_presence_dropped_total', { reason: 'malformed' }), bad.length)
  t.equal(await gw.metric('tether_worker_presence_dropped_total', { reason: 'impostor' }), impostor.length)
  t.equal(await gw.metric('tether_worker_presence_dropped_total', { reason: 'absurd' }), absurd.length)
  t.same((await gw.request('GET', '/api/health/workers')).json.workers, [], 'none of it made a worker')
  // Nothing announced: the v1 worker still answers on the shared topic.
  t.equal((await gw.chat('after-garbage', 'still here')).status, 200)

  // The registry is bounded: a third worker while two are online is dropped and counted.
  for (const id of ['w1', 'w2', 'w3']) await peer.publishAsync(`llm/workers/${id}`, beat(id), { qos: 1 })
  await waitFor(async () => await gw.metric('tether_worker_presence_dropped_total', { reason: 'registry_full' }) === 1, { what: 'registry_full counted' })
  t.same((await gw.request('GET', '/api/health/workers')).json.workers.map((w: { worker_id: string }) => w.worker_id).sort(), ['w1', 'w2'])
  t.equal(gw.tether.pending.size, 0)
})
