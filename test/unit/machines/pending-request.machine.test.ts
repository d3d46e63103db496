import t from 'tap'
import { createActor } from 'xstate'
import {
  pendingRequestMachine,
  type FailureCause,
  type PendingEvent,
  type PendingOutcome
} from '../../../machines/pending-request.machine.js'
import { CountingClock } from '../../fixtures/counting-clock.js'

/** The part of a tap test the helpers below need. */
interface Scope {
  teardown (fn: () => unknown): void
}


interface Settled { outcome: PendingOutcome, cause: FailureCause | null, text: string | null, at: number }

const TIMEOUT_MS = 1_000

// The machine has no timer of its own: like the registry (src/chat/pending-registry.ts),
// this harness arms one deadline timer that sends DEADLINE, and disarms it on settle.
function startRequest (t: Scope, timeoutMs = TIMEOUT_MS) {
  const clock = new CountingClock()
  const settles: Settled[] = []
  const chunks: string[] = []
  let deadline: unknown = null
  const disarm = (): void => {
    if (deadline !== null) clock.clearTimeout(deadline)
    deadline = null
  }
  const machine = pendingRequestMachine.provide({
    actions: {
      relayChunk: ({ event }) => { if (event.type === 'CHUNK') chunks.push(event.delta) },
      settle: ({ context }, { outcome }) => {
        disarm()
        settles.push({ outcome, cause: context.cause, text: context.text, at: clock.now() })
      }
    }
  })
  const actor = createActor(machine, { input: { requestId: 'req-1' } })
  t.teardown(() => { disarm(); actor.stop() })
  actor.start()
  deadline = clock.setTimeout(() => { deadline = null; actor.send({ type: 'DEADLINE' }) }, timeoutMs)
  return {
    actor,
    clock,
    settles,
    chunks,
    send: (event: PendingEvent) => { actor.send(event) },
    value: () => actor.getSnapshot().value,
    status: () => actor.getSnapshot().status
  }
}

type Request = ReturnType<typeof startRequest>

interface Exit {
  name: string
  exit: (r: Request) => void
  state: string
  settled: Omit<Settled, 'at'>
}

const exits: Exit[] = [
  {
    name: 'a done reply',
    exit: (r) => { r.send({ type: 'DONE', content: 'the whole answer' }) },
    state: 'done',
    settled: { outcome: 'done', cause: null, text: 'the whole answer' }
  },
  {
    name: 'a worker error',
    exit: (r) => { r.send({ type: 'ERROR', error: 'model overloaded' }) },
    state: 'failed',
    settled: { outcome: 'failed', cause: 'worker_error', text: 'model overloaded' }
  },
  {
    name: 'a lost link',
    exit: (r) => { r.send({ type: 'LINK_DOWN' }) },
    state: 'failed',
    settled: { outcome: 'failed', cause: 'link_down', text: null }
  },
  {
    name: 'a shutdown',
    exit: (r) => { r.send({ type: 'SHUTDOWN' }) },
    state: 'failed',
    settled: { outcome: 'failed', cause: 'shutdown', text: null }
  },
  {
    name: 'an abort',
    exit: (r) => { r.send({ type: 'ABORT' }) },
    state: 'cancelled',
    settled: { outcome: 'cancelled', cause: null, text: null }
  },
  {
    name: 'the deadline',
    exit: (r) => { r.clock.advance(TIMEOUT_MS) },
    state: 'timedOut',
    settled: { outcome: 'timedOut', cause: null, text: null }
  }
]

t.test('a new request is pending with its deadline armed', async (t) => {
  const r = startRequest(t)
  t.equal(r.value(), 'pending')
  t.equal(r.status(), 'active')
  t.equal(r.clock.liveTimers, 1)
  t.same(r.settles, [])
})

for (const e of exits) {
  for (const streaming of [false, true]) {
    const from = streaming ? 'streaming' : 'pending'
    t.test(`${e.name} while ${from} reaches ${e.state} and settles once as ${e.settled.outcome}`, async (t) => {
      const r = startRequest(t)
      if (streaming) {
        r.send({ type: 'CHUNK', delta: 'partial' })
        t.equal(r.value(), 'streaming')
      }
      r.clock.advance(TIMEOUT_MS / 2)
      t.same(r.settles, [], 'nothing settles before its exit')
      if (e.state === 'timedOut') r.clock.advance(TIMEOUT_MS / 2)
      else e.exit(r)

      t.equal(r.value(), e.state)
      t.equal(r.status(), 'done', 'a final state ends the actor')
      t.equal(r.settles.length, 1, 'settle runs exactly once')
      t.same(r.settles[0], { ...e.settled, at: e.state === 'timedOut' ? TIMEOUT_MS : TIMEOUT_MS / 2 })
      t.equal(r.clock.liveTimers, 0, 'the deadline is disarmed')
    })
  }
}

t.test('the deadline does not restart when the first chunk arrives', async (t) => {
  const r = startRequest(t)
  r.clock.advance(900)
  r.send({ type: 'CHUNK', delta: 'late start' })
  t.equal(r.value(), 'streaming')
  r.clock.advance(99)
  t.same(r.settles, [], 'still inside the deadline at 999 ms')
  r.clock.advance(1)
  t.equal(r.value(), 'timedOut')
  t.same(r.settles, [{ outcome: 'timedOut', cause: null, text: null, at: 1_000 }], 'times out at 1000 ms, not at 1900 ms')
  t.same(r.chunks, ['late start'])
})

t.test('a steady stream of chunks does not keep a request alive past its deadline', async (t) => {
  const r = startRequest(t)
  for (let at = 0; at < TIMEOUT_MS; at += 100) {
    r.send({ type: 'CHUNK', delta: String(at) })
    r.clock.advance(100)
  }
  t.equal(r.value(), 'timedOut')
  t.equal(r.settles.length, 1)
  t.equal(r.settles[0]?.at, TIMEOUT_MS)
})

t.test('chunks are relayed one by one, in order', async (t) => {
  const r = startRequest(t)
  const deltas = ['The', ' quick', ' brown', '', ' fox']
  for (const delta of deltas) r.send({ type: 'CHUNK', delta })
  t.same(r.chunks, deltas)
  t.same(r.settles, [], 'chunks never settle')
  r.send({ type: 'DONE', content: 'The quick brown fox' })
  t.same(r.chunks, deltas, 'done is not relayed as a chunk')
  t.equal(r.settles[0]?.text, 'The quick brown fox')
})

for (const e of exits) {
  t.test(`events after ${e.name} do nothing`, async (t) => {
    const r = startRequest(t)
    r.send({ type: 'CHUNK', delta: 'a' })
    e.exit(r)
    t.equal(r.settles.length, 1)

    const after: PendingEvent[] = [
      { type: 'CHUNK', delta: 'b' },
      { type: 'DONE', content: 'late' },
      { type: 'ERROR', error: 'late' },
      { type: 'LINK_DOWN' },
      { type: 'SHUTDOWN' },
      { type: 'ABORT' }
    ]
    for (const event of after) r.send(event)
    r.clock.advance(10 * TIMEOUT_MS)
    t.equal(r.value(), e.state)
    t.same(r.chunks, ['a'], 'no chunk relayed after settling')
    t.equal(r.settles.length, 1, 'settle never runs twice')
    t.same(r.settles[0], { ...e.settled, at: r.settles[0]?.at })
  })
}

t.test('a zero deadline times out on the next tick, not synchronously', async (t) => {
  const r = startRequest(t, 0)
  t.equal(r.value(), 'pending')
  t.same(r.settles, [])
  r.clock.advance(0)
  t.equal(r.value(), 'timedOut')
  t.equal(r.settles.length, 1)
})

t.test('a stopped request ignores its deadline and does not settle', async (t) => {
  const r = startRequest(t)
  r.actor.stop()
  r.clock.advance(TIMEOUT_MS)
  t.same(r.settles, [])
  t.equal(r.clock.liveTimers, 0)
})

t.test('the machine itself arms no timer: the deadline is the DEADLINE event', async (t) => {
  const actor = createActor(pendingRequestMachine, { input: { requestId: 'r' } })
  actor.start()
  t.equal(actor.getSnapshot().value, 'pending')
  actor.send({ type: 'DEADLINE' })
  t.equal(actor.getSnapshot().value, 'timedOut')
  t.equal(actor.getSnapshot().status, 'done')
})
