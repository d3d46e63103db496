/**
 * Resume on any gateway (contract v1.1, several gateways): two gateways on one broker and one
 * database, the reference worker announced. A stream resumed on the other gateway is handed
 * over while its gateway lives (the worker then answers the new one), replayed whole when it
 * had finished, re-sent by its worker when its gateway was SIGKILLed, and ends
 * stream_interrupted within the takeover bound when nobody has it. Stored once, either way.
 */
import type { ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startTestBroker, type TestBroker } from '../fixtures/broker.js'
import { createTestDatabase } from '../fixtures/database.js'
import { sseDelta, sseEnd, sseHead, startFakeModel, lastUser, type FakeModel } from '../fixtures/fake-model.js'
import { startGateway, TEST_AUTH_SECRET, type Gateway } from '../fixtures/gateway.js'
import { freePort } from '../fixtures/ports.js'
import { spawnTs, waitForLine } from '../fixtures/run-ts.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, wsUrl, type TestSocket } from '../fixtures/ws-client.js'

const FAST = { CLUSTER_HEARTBEAT_MS: '200', STREAM_RESUME_GRACE_MS: '30000' }

function startWorker (t: Test, broker: TestBroker, model: FakeModel): ChildProcess {
  const child = spawnTs('src/llm-worker/main.ts', {
    MQTT_URL: broker.url, LLM_BASE_URL: model.url, LLM_MODEL: 'test-model', WORKER_ID: 'worker-t',
    WORKER_HEARTBEAT_MS: '300', WORKER_SHARED_GROUP: '', WORKER_SHUTDOWN_GRACE_MS: '0', LOG_LEVEL: 'info'
  })
  t.teardown(() => { child.kill('SIGKILL') })
  return child
}

interface Rig { broker: TestBroker, model: FakeModel, databaseUrl: string }

/** Chats whose text starts with "hold" stream "one " and wait for release, then "two"; the rest answer at once. */
async function rig (t: Test): Promise<Rig> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const model = await startFakeModel(t, async (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'one ')
    if (lastUser(call).startsWith('hold')) await call.released
    sseDelta(call.res, 'two')
    sseEnd(call.res)
  })
  t.teardown(() => { for (const call of model.calls) call.release() })
  const worker = startWorker(t, broker, model)
  await waitForLine(worker, /worker ready/, 60_000)
  const db = await createTestDatabase(t)
  return { broker, model, databaseUrl: db.url }
}

async function gateway (t: Test, r: Rig, id: string, username?: string): Promise<Gateway> {
  const gw = await startGateway(t, { ...FAST, MQTT_URL: r.broker.url, DATABASE_URL: r.databaseUrl, INSTANCE_ID: id }, username !== undefined ? { username } : {})
  await waitFor(async () => (await gw.request('GET', '/api/health/workers')).json.workers.some((w: any) => w.state === 'online'), { timeoutMs: 20_000, what: `${id} sees the worker` })
  return gw
}

async function peers (gws: Gateway[], n: number): Promise<void> {
  for (const gw of gws) await waitFor(async () => (await gw.request('GET', '/api/health/cluster')).json.instances.length >= n, { timeoutMs: 10_000, what: 'the gateways see each other' })
}

function socket (t: Test, port: number, token: string): Promise<TestSocket> {
  return connect(t, wsUrl(port, `/api/chatbot/ws?token=${token}`))
}

async function assistantTurns (gw: Gateway, sessionId: string, token: string): Promise<Array<{ content: string, status: string }>> {
  const answer = await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`, undefined, { token })
  return (answer.json as Array<{ role: string, content: string, status: string }>).filter((m) => m.role === 'assistant')
}

t.test('a live stream resumed on another gateway is handed over: the rest of it, once, stored once', async (t) => {
  const r = await rig(t)
  const a = await gateway(t, r, 'gw-a')
  const b = await gateway(t, r, 'gw-b', 'fixture-b')
  await peers([a, b], 2)
  const sessionId = await a.sessionId('s')
  const first = await socket(t, a.port, a.token)
  first.send({ type: 'chat', id: 'c1', session_id: sessionId, content: 'hold on' })
  const start = await first.next('start', (f) => f.type === 'start')
  await first.next('chunk 1', (f) => f.type === 'chunk' && f.seq === 1)
  await first.close()

  const second = await socket(t, b.port, a.token)
  second.send({ type: 'resume', id: 'r1', request_id: start.request_id, after_seq: 1 })
  await waitFor(async () => await a.metric('tether_stream_handoffs_total', { result: 'handed_over' }) === 1, { timeoutMs: 10_000, what: 'gw-a handed it over' })
  for (const call of r.model.calls) call.release()
  const chunk = await second.next('chunk 2', (f) => f.type === 'chunk' && f.seq === 2)
  t.equal(chunk.delta, 'two')
  const done = await second.next('done', (f) => f.type === 'done')
  t.equal(done.content, 'one two')
  t.notOk(second.frames.some((f) => f.type === 'chunk' && f.seq === 1), 'nothing the client had is sent again')
  t.equal(await b.metric('tether_stream_takeovers_total', { result: 'handed_over' }), 1)
  t.same((await b.request('GET', '/api/status')).json.takeovers, { handed_over: 1 }, 'the status page says so')
  await waitFor(async () => (await assistantTurns(a, sessionId, a.token)).length === 1, { timeoutMs: 10_000, what: 'the reply stored' })
  t.same((await assistantTurns(a, sessionId, a.token)).map(({ content, status }) => ({ content, status })), [{ content: 'one two', status: 'complete' }], 'stored once, whole')
  t.equal(await a.metric('tether_chat_pending_requests') + await b.metric('tether_chat_pending_requests'), 0, 'nothing left in flight on either gateway')
  t.equal(await a.metric('tether_chat_requests_total', { outcome: 'handed_over' }), 1, 'gw-a let its chat go when the worker said it moved')
  t.equal(await a.metric('tether_chat_cancels_sent_total'), 0, 'and sent its worker no cancel')

  // A stranger cannot take it: the other gateway holds it for its user only.
  const stranger = await b.newUser('stranger-b')
  const theirs = await socket(t, b.port, stranger.token)
  theirs.send({ type: 'resume', id: 'x', request_id: start.request_id, after_seq: 0 })
  const refused = await theirs.next('error', (f) => f.type === 'error', 10_000)
  t.equal(refused.error, 'stream_interrupted', 'nobody answers a stranger: the lookup runs out')
})

t.test('a finished stream resumed on another gateway is replayed whole from the gateway that kept it', async (t) => {
  const r = await rig(t)
  const a = await gateway(t, r, 'gw-c')
  const b = await gateway(t, r, 'gw-d', 'fixture-d')
  await peers([a, b], 2)
  const sessionId = await a.sessionId('s')
  const first = await socket(t, a.port, a.token)
  first.send({ type: 'chat', id: 'c1', session_id: sessionId, content: 'quick' })
  const start = await first.next('start', (f) => f.type === 'start')
  await first.next('done', (f) => f.type === 'done')
  await first.close()

  const resumedAt = performance.now()
  const res = await b.request('GET', `/api/chatbot/streams/${start.request_id}`, undefined, { token: a.token, headers: { 'last-event-id': '1' } })
  t.equal(res.status, 200)
  t.match(res.text, /id: 2\n/, 'the chunk after Last-Event-ID')
  t.notMatch(res.text, /id: 1\n/, 'not the one before')
  t.match(res.text, /event: done/)
  t.ok(performance.now() - resumedAt < 1500, 'answered by the gateway that kept it, before the workers are asked')
  t.equal(await b.metric('tether_stream_takeovers_total', { result: 'replayed' }), 1)
  t.same((await assistantTurns(a, sessionId, a.token)).length, 1, 'a replay stores nothing again')
})

t.test('a stream whose gateway was SIGKILLed is re-sent by its worker to the gateway the client resumed on; an unknown one ends stream_interrupted within 2 s', async (t) => {
  const r = await rig(t)
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-takeover-'))
  chmodSync(dataDir, 0o755)
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const port = await freePort()
  const doomed = spawnTs('src/main.ts', {
    ...FAST, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'silent', MQTT_URL: r.broker.url, DATABASE_URL: r.databaseUrl,
    DATA_DIR: dataDir, INSTANCE_ID: 'gw-doomed', AUTH_SECRET: TEST_AUTH_SECRET, THREADS: '1', THREAD_TASK_TIMEOUT_MS: '60000', PASSWORD_HASH_COST: '12'
  })
  t.teardown(() => { doomed.kill('SIGKILL') })
  const b = await gateway(t, r, 'gw-e')
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200, { timeoutMs: 60_000, what: 'the doomed gateway ready' })
  await peers([b], 2)
  // The fixture user of gw-e exists in the shared database: it logs in there and chats on the doomed one.
  const sessionId = await b.sessionId('s')
  const first = await socket(t, port, b.token)
  first.send({ type: 'chat', id: 'c1', session_id: sessionId, content: 'hold tight' })
  const start = await first.next('start', (f) => f.type === 'start')
  await first.next('chunk 1', (f) => f.type === 'chunk' && f.seq === 1)
  doomed.kill('SIGKILL')

  const second = await socket(t, b.port, b.token)
  const resumedAt = performance.now()
  second.send({ type: 'resume', id: 'r1', request_id: start.request_id, after_seq: 1 })
  await waitFor(async () => await b.metric('tether_stream_takeovers_total', { result: 'worker' }) === 1, { timeoutMs: 5000, what: 'the worker re-sent it' })
  t.ok(performance.now() - resumedAt < 2500, 'taken over within the takeover bound')
  for (const call of r.model.calls) call.release()
  const done = await second.next('done', (f) => f.type === 'done')
  t.equal(done.content, 'one two')
  t.same(second.frames.filter((f) => f.type === 'chunk').map((f) => f.seq), [2], 'only what the client did not have')
  await waitFor(async () => (await assistantTurns(b, sessionId, b.token)).length === 1, { timeoutMs: 10_000, what: 'the reply stored by the gateway that took it over' })
  t.equal(await b.metric('tether_chat_pending_requests'), 0, 'nothing left in flight')

  const lostAt = performance.now()
  second.send({ type: 'resume', id: 'r2', request_id: 'no-such-stream-anywhere', after_seq: 0 })
  const lost = await second.next('interrupted', (f) => f.type === 'error' && f.id === 'r2', 5000)
  t.equal(lost.error, 'stream_interrupted')
  const ms = performance.now() - lostAt
  t.ok(ms >= 1500 && ms < 3000, `ends within the 2 s bound (${Math.round(ms)} ms), after the gateways and the workers were asked`)
})

t.test('one gateway alone answers an unknown stream at once, as before', async (t) => {
  const r = await rig(t)
  const a = await gateway(t, r, 'gw-alone')
  const res = await a.request('GET', '/api/chatbot/streams/nothing-here', undefined, { headers: { 'last-event-id': '0' } })
  t.equal(res.status, 404)
  t.equal(res.json.error, 'stream_not_found')
  t.ok(res.ms < 1000, 'not after a cluster lookup')
})
