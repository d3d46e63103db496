import t from 'tap'
import { createWorkerRouting, type PresenceMode, type RoutingFailure } from '../../../src/chat/worker-routing.js'
import { createWorkerFleet } from '../../../src/fleet/worker-fleet.js'
import { silentLogger } from '../../../src/log.js'
import { createTopics } from '../../../src/mqtt/topics.js'
import { CountingClock } from '../../fixtures/counting-clock.js'

const topics = createTopics('llm', 'gw')

function setup (mode: PresenceMode = 'auto', acceptTimeoutMs = 1000): {
  clock: CountingClock
  published: Array<{ topic: string, payload: string }>
  failed: Array<[string, RoutingFailure]>
  cancels: Array<[string, string]>
  beat: (id: string, fields?: Record<string, unknown>) => void
  routing: ReturnType<typeof createWorkerRouting>
  fleet: ReturnType<typeof createWorkerFleet>
  linkUp: { value: boolean }
} {
  const clock = new CountingClock()
  const published: Array<{ topic: string, payload: string }> = []
  const failed: Array<[string, RoutingFailure]> = []
  const cancels: Array<[string, string]> = []
  let presence: ((payload: Buffer, topic: string, retained?: boolean) => void) | null = null
  const linkUp = { value: true }
  const link = {
    publish: (topic: string, payload: string | Buffer) => { if (!linkUp.value) return false; published.push({ topic, payload: String(payload) }); return true },
    subscribe: (_f: string, _q: 0 | 1, handler: (payload: Buffer, topic: string, retained?: boolean) => void) => { presence = handler },
    unsubscribe: () => { presence = null }
  }
  let routing: ReturnType<typeof createWorkerRouting> | null = null
  const fleet = createWorkerFleet({ link, topics, clock, log: silentLogger(), maxWorkers: 10, forgetAfterMs: 60_000, random: () => 0, onOffline: (id) => routing?.workerOffline(id) })
  fleet.start()
  routing = createWorkerRouting({
    mode, fleet, link, topics, clock, log: silentLogger(), acceptTimeoutMs,
    fail: (id, cause) => { failed.push([id, cause]); routing?.settled(id) },
    cancelAt: (w, id) => { cancels.push([w, id]) }
  })
  const beat = (id: string, fields: Record<string, unknown> = {}): void => {
    presence?.(Buffer.from(JSON.stringify({ v: 1, worker_id: id, status: 'online', capacity: 2, in_flight: 0, heartbeat_ms: 1000, ...fields })), `llm/workers/${id}`, false)
  }
  return { clock, published, failed, cancels, beat, routing, fleet, linkUp }
}

t.test('with no announced worker, auto sends to the shared topic and required refuses with none', async (t) => {
  const auto = setup('auto')
  t.equal(auto.routing.send('r1', 'p'), 'sent')
  t.same(auto.published.map((p) => p.topic), ['llm/chat/request'])
  t.equal(auto.routing.size, 0, 'nothing to track for a v1 worker')
  const required = setup('required')
  t.equal(required.routing.refusal(), 'none')
  t.equal(required.routing.send('r1', 'p'), 'none')
  t.same(required.published, [])
  const off = setup('off')
  off.beat('w1')
  t.equal(off.routing.send('r1', 'p'), 'sent')
  t.same(off.published.map((p) => p.topic), ['llm/chat/request'], 'off ignores presence')
})

t.test('an announced worker gets requests on its own topic up to its capacity, then full', async (t) => {
  const s = setup()
  s.beat('w1')
  t.equal(s.routing.send('r1', 'p1'), 'sent')
  t.equal(s.routing.send('r2', 'p2'), 'sent')
  t.equal(s.routing.send('r3', 'p3'), 'full')
  t.same(s.published.map((p) => p.topic), ['llm/chat/request/w1', 'llm/chat/request/w1'])
  t.equal(s.routing.settled('r1'), 'w1')
  t.equal(s.routing.send('r3', 'p3'), 'sent', 'a settled chat frees its place')
  t.equal(s.fleet.summary().in_flight, 2)
})

t.test('the least loaded of two: load is ours plus what other gateways hold', async (t) => {
  const s = setup()
  s.beat('w1', { capacity: 10, in_flight: 6 })
  s.beat('w2', { capacity: 10, in_flight: 0 })
  s.routing.send('r1', 'p')
  t.equal(s.published[0]?.topic, 'llm/chat/request/w2')
})

t.test('before any move, a reply without worker_id passes (and counts as the ack)', async (t) => {
  const s = setup()
  s.beat('w1')
  s.routing.send('r1', 'p')
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'chunk', delta: 'x' }), 'pass')
  s.clock.advanceInSteps(1200)
  t.same(s.failed, [], 'acknowledged by the chunk: no move on the accept timer')
})

t.test('an ack settles where a request is; an ack from another worker or for nothing is not consumed', async (t) => {
  const s = setup()
  s.beat('w1')
  s.routing.send('r1', 'p')
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'ack', worker_id: 'w2' }), 'foreign')
  t.equal(s.routing.onReply({ v: 1, request_id: 'nope', type: 'ack', worker_id: 'w1' }), 'unknown_ack')
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'ack', worker_id: 'w1' }), 'consumed')
  s.clock.advanceInSteps(1200)
  t.same(s.failed, [], 'an acknowledged request does not move on the accept timer')
  t.equal(s.clock.liveTimers, 1, 'only the presence timer is armed')
})

t.test('no ack in time: the request moves once, with the same payload, and the first worker is told; a second silence ends it worker_lost', async (t) => {
  const s = setup('auto', 500)
  s.beat('w1')
  s.beat('w2')
  s.routing.send('r1', 'payload-1')
  const first = s.published[0]?.topic as string
  s.clock.advanceInSteps(500)
  const second = s.published[1]
  t.not(second?.topic, first)
  t.equal(second?.payload, 'payload-1')
  t.same(s.cancels, [[first.split('/').at(-1), 'r1']])
  s.beat('w1'); s.beat('w2')
  s.clock.advanceInSteps(500)
  t.same(s.failed, [['r1', 'worker_lost']])
  t.equal(s.routing.size, 0)
})

t.test('busy moves the request once, without a cancel; busy again is no_workers', async (t) => {
  const s = setup()
  s.beat('w1')
  s.beat('w2')
  s.routing.send('r1', 'p')
  const at = (i: number): string => (s.published[i]?.topic as string).split('/').at(-1) as string
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'error', error: 'busy', retry: true, worker_id: at(0) }), 'consumed')
  t.not(at(1), at(0))
  t.same(s.cancels, [])
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'error', error: 'busy', retry: true, worker_id: at(1) }), 'consumed')
  t.same(s.failed, [['r1', 'no_workers']])
})

t.test('after a move, replies from the worker it left are foreign; the new worker\'s pass', async (t) => {
  const s = setup('auto', 100)
  s.beat('w1')
  s.beat('w2')
  s.routing.send('r1', 'p')
  const from = (s.published[0]?.topic as string).split('/').at(-1) as string
  s.clock.advanceInSteps(100)
  const to = (s.published[1]?.topic as string).split('/').at(-1) as string
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'chunk', delta: 'x', seq: 1, worker_id: from }), 'foreign')
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'chunk', delta: 'y', seq: 1, worker_id: to }), 'pass')
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'done', content: 'y' }), 'foreign', 'after a move, a reply that does not say whose it is cannot be trusted')
  t.equal(s.routing.onReply({ v: 1, request_id: 'r1', type: 'error', error: 'busy', retry: true }), 'foreign', 'nor a late busy from the first worker')
  t.same(s.failed, [], 'which therefore does not end the moved request')
})

t.test('a worker going offline: unacknowledged requests move, acknowledged ones end worker_lost', async (t) => {
  const s = setup('auto', 60_000)
  s.beat('w1', { capacity: 4, heartbeat_ms: 100 })
  s.routing.send('acked', 'p')
  s.routing.send('unacked', 'p')
  s.routing.onReply({ v: 1, request_id: 'acked', type: 'ack', worker_id: 'w1' })
  s.beat('w2', { capacity: 4, heartbeat_ms: 60_000 })
  s.clock.advanceInSteps(300)
  t.same(s.failed, [['acked', 'worker_lost']])
  t.equal(s.published.at(-1)?.topic, 'llm/chat/request/w2', 'the unacknowledged one moved')
  t.equal(s.routing.refusal(), null)
})

t.test('a worker going offline with nowhere to move: its unacknowledged requests end worker_lost, new ones are refused none', async (t) => {
  const s = setup('auto', 60_000)
  s.beat('w1', { heartbeat_ms: 100 })
  s.routing.send('r1', 'p')
  s.clock.advanceInSteps(300)
  t.same(s.failed, [['r1', 'worker_lost']])
  t.equal(s.routing.send('r2', 'p'), 'none')
  t.equal(s.routing.refusal(), 'none')
})

t.test('a link that refuses the publish sends nothing and tracks nothing', async (t) => {
  const s = setup()
  s.beat('w1')
  s.linkUp.value = false
  t.equal(s.routing.send('r1', 'p'), 'link')
  t.equal(s.routing.size, 0)
  t.equal(s.fleet.summary().in_flight, 0)
})

t.test('a draining worker takes nothing new; with only it, chats are refused as if none were online', async (t) => {
  const s = setup()
  s.beat('w1', { status: 'draining' })
  t.equal(s.routing.send('r1', 'p'), 'none')
  t.equal(s.fleet.summary().capacity, 0)
})
