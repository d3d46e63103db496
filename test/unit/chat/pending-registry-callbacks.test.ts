import t from 'tap'
import { SimulatedClock } from 'xstate'
import { createPendingRegistry, type Settlement } from '../../../src/chat/pending-registry.js'
import type { Clock } from '../../../src/clock.js'
import type { ReplyEnvelope } from '../../../src/mqtt/protocol.js'

// A callback is the caller's code (a uWS write, a WebSocket send, a metrics hook) and may
// throw, e.g. on a socket that closed under it. The registry's promise is that every request
// leaves through a settlement: a throwing callback must not strand the entry, skip onSettled,
// or escape as an uncaught exception (src/main.ts exits the process on one).
//
// Kept apart from pending-registry.test.ts: while the registry lets these errors escape,
// XState rethrows them on a timer and they end this process.

const chunk = (id: string, delta: string): ReplyEnvelope => ({ v: 1, request_id: id, type: 'chunk', delta })
const done = (id: string, content: string): ReplyEnvelope => ({ v: 1, request_id: id, type: 'done', content })

function makeRegistry (t: { teardown (fn: () => unknown): void }) {
  const sim = new SimulatedClock()
  // SimulatedClock's clearTimeout takes a number, Clock's an unknown handle: adapt, not cast.
  const clock: Clock & { increment: (ms: number) => void } = {
    now: () => sim.now(),
    setTimeout: (fn, ms) => sim.setTimeout(fn, ms),
    clearTimeout: (handle) => { sim.clearTimeout(handle as number) },
    increment: (ms) => { sim.increment(ms) }
  }
  const settled: Settlement[] = []
  const registry = createPendingRegistry({
    maxPending: 100,
    maxPendingPerSession: 10,
    clock,
    onSettled: (s) => { settled.push(s) }
  })
  t.teardown(() => { registry.failAll('shutdown') })
  return { registry, clock, settled }
}

t.test('a throwing onChunk does not strand its request', async (t) => {
  const { registry, clock, settled } = makeRegistry(t)
  const settles: Settlement[] = []
  const neighbour: Settlement[] = []
  registry.open('a', 's', 1_000, {
    onChunk: () => { throw new Error('Invalid access of closed uWS.WebSocket') },
    onSettle: (s) => { settles.push(s) }
  })
  registry.open('b', 's', 1_000, { onSettle: (s) => { neighbour.push(s) } })
  registry.deliver(chunk('a', 'x'))
  registry.deliver(done('a', 'the answer'))
  clock.increment(1_000)

  t.equal(settles.length, 1, 'the request still settles')
  t.equal(neighbour[0]?.outcome, 'timedOut', 'its neighbour is unaffected')
  t.equal(settled.length, 2, 'onSettled hears both')
  t.equal(registry.size, 0, 'no entry left behind')
  t.same(registry.bySession(), {}, 'no session slot left taken')
  t.equal(registry.inFlightSince(), null, 'the link is not told a request is in flight forever')
})

t.test('a throwing onSettle still frees the entry and reaches onSettled', async (t) => {
  const { registry, settled } = makeRegistry(t)
  const neighbour: Settlement[] = []
  registry.open('a', 's', 1_000, { onSettle: () => { throw new Error('Invalid access of discarded uWS.HttpResponse') } })
  registry.open('b', 's', 1_000, { onSettle: (s) => { neighbour.push(s) } })
  registry.deliver(done('a', 'x'))
  t.equal(settled.length, 1, 'metrics count the settlement')
  t.equal(registry.size, 1)
  registry.deliver(done('b', 'y'))
  t.equal(neighbour.length, 1)
  t.equal(registry.size, 0)
  await registry.whenEmpty()
})
