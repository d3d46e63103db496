/**
 * The reference LLM worker as a process, frozen with SIGSTOP while it holds chats: the gateway
 * notices from its heartbeats alone (the TCP connection stays open, as with a hung process),
 * answers the chats it held with 503 worker_lost within 3 heartbeat intervals instead of at the
 * 90 s deadline, sends new chats to the other worker, refuses with no_workers when none is
 * left, and takes the worker back after SIGCONT.
 */
import type { ChildProcess } from 'node:child_process'
import t, { type Test } from 'tap'
import { startTestBroker, type TestBroker } from '../fixtures/broker.js'
import { sseDelta, sseEnd, sseHead, startFakeModel, lastUser, type FakeModel } from '../fixtures/fake-model.js'
import { startGateway, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { spawnTs, waitForLine } from '../fixtures/run-ts.js'
import { waitFor } from '../fixtures/wait-for.js'

const HEARTBEAT_MS = 300

function startWorker (t: Test, broker: TestBroker, model: FakeModel, workerId: string): ChildProcess {
  const child = spawnTs('src/llm-worker/main.ts', {
    MQTT_URL: broker.url,
    LLM_BASE_URL: model.url,
    LLM_MODEL: 'test-model',
    WORKER_ID: workerId,
    WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS),
    // Plain subscriptions: aedes delivers nothing to $share, and these chats go to each worker's own topic anyway.
    WORKER_SHARED_GROUP: '',
    WORKER_SHUTDOWN_GRACE_MS: '0',
    LOG_LEVEL: 'info'
  })
  t.teardown(() => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  })
  return child
}

interface WorkerRow { worker_id: string, state: string, in_flight: number }

async function workers (gw: Gateway): Promise<WorkerRow[]> {
  return (await gw.request('GET', '/api/health/workers')).json.workers as WorkerRow[]
}

t.test('a worker stopped with SIGSTOP: its chats end worker_lost within 3 heartbeat intervals, new chats go to the other, none left is no_workers, SIGCONT brings it back', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  // Chats whose text starts with "hold" stream one token and then wait; the rest answer at once.
  const model = await startFakeModel(t, async (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'token ')
    if (lastUser(call).startsWith('hold')) await call.released
    sseDelta(call.res, 'end')
    sseEnd(call.res)
  })
  const a = startWorker(t, broker, model, 'worker-a')
  const b = startWorker(t, broker, model, 'worker-b')
  await Promise.all([waitForLine(a, /worker ready/, 60_000), waitForLine(b, /worker ready/, 60_000)])
  // The default 90 s deadline: the point is that nobody waits for it.
  const gw = await startGateway(t, { MQTT_URL: broker.url, MAX_PENDING_PER_SESSION: '100', MAX_PENDING_PER_USER: '100' })
  t.teardown(() => { for (const call of model.calls) call.release() })
  await waitFor(async () => (await workers(gw)).filter((w) => w.state === 'online').length === 2, { timeoutMs: 30_000, what: 'both workers online' })

  const held: Array<Promise<HttpAnswer>> = []
  for (let i = 0; i < 4; i++) held.push(gw.chat(`held-${i}`, `hold ${i}`))
  await waitFor(() => model.calls.length === 4, { timeoutMs: 20_000, what: 'four chats streaming' })
  const rows = await workers(gw)
  const victim = rows.reduce((m, w) => (w.in_flight > m.in_flight ? w : m))
  const survivor = rows.find((w) => w.worker_id !== victim.worker_id) as WorkerRow
  const [victimProcess, survivorProcess] = victim.worker_id === 'worker-a' ? [a, b] : [b, a]

  const stoppedAt = performance.now()
  victimProcess.kill('SIGSTOP')
  await waitFor(async () => (await workers(gw)).some((w) => w.worker_id === victim.worker_id && w.state === 'offline'), { timeoutMs: 10_000, what: 'the stopped worker offline' })
  // The survivor's chats are still in flight; let them finish now.
  for (const call of model.calls) call.release()
  const answers = await Promise.all(held)
  const lostAfterMs = performance.now() - stoppedAt
  const lost = answers.filter((x) => x.status === 503)
  t.equal(lost.length, victim.in_flight, `the stopped worker's ${victim.in_flight} chats ended 503`)
  t.ok(lost.every((x) => x.json.error === 'worker_lost'), lost.map((x) => x.text).join(' | '))
  t.equal(answers.filter((x) => x.status === 200).length, 4 - victim.in_flight, 'the other worker\'s chats finished')
  t.ok(lostAfterMs < 30_000, `answered ${Math.round(lostAfterMs)} ms after SIGSTOP, not at the 90 s deadline`)

  const moved = await gw.chat('after-stop', 'quick one')
  t.equal(moved.status, 200, 'a new chat goes to the live worker')
  t.equal((await workers(gw)).find((w) => w.worker_id === survivor.worker_id)?.state, 'online')

  survivorProcess.kill('SIGSTOP')
  await waitFor(async () => (await workers(gw)).every((w) => w.state === 'offline'), { timeoutMs: 10_000, what: 'both offline' })
  const none = await gw.chat('none-left', 'anyone?')
  t.equal(none.status, 503)
  t.equal(none.json.error, 'no_workers')
  t.ok(none.ms < 5000, `refused at once (${Math.round(none.ms)} ms)`)
  t.equal((await gw.request('GET', '/api/health')).json.status, 'degraded')

  victimProcess.kill('SIGCONT')
  survivorProcess.kill('SIGCONT')
  await waitFor(async () => (await workers(gw)).filter((w) => w.state === 'online').length === 2, { timeoutMs: 20_000, what: 'both back online' })
  const back = await gw.chat('back', 'back again')
  t.equal(back.status, 200, back.text)
  await waitFor(() => gw.tether.pending.size === 0, { what: 'nothing pending' })
})
