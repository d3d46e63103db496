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
    /** The reply region's state while active (pending, streaming), else the final state. */
    value: () => {
      const v = actor.getSnapshot().value
      return typeof v === 'string' ? v : (v as { active: { reply: string } }).active.reply
    },
    client: () => {
      const v = actor.getSnapshot().value
      return typeof v === 'string' ? null : (v as { active: { client: string } }).active.client
    },
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
  t.same(actor.getSnapshot().value, { active: { reply: 'pending', client: 'attached' } })
  actor.send({ type: 'DEADLINE' })
  t.equal(actor.getSnapshot().value, 'timedOut')
  t.equal(actor.getSnapshot().status, 'done')
})

/** A bare actor whose timer slots are recorded, not run: the registry's job (pending-registry.ts). */
function recorded () {
  const calls: string[] = []
  const settles: Array<{ outcome: PendingOutcome, cancelReason: string | null }> = []
  const machine = pendingRequestMachine.provide({
    actions: {
      armStallTimer: (_, { phase }) => { calls.push(`stall:${phase}`) },
      armGraceTimer: () => { calls.push('grace:on') },
      disarmGraceTimer: () => { calls.push('grace:off') },
      relayChunk: ({ event }) => { if (event.type === 'CHUNK') calls.push(`chunk:${event.delta}`) },
      settle: ({ context }, { outcome }) => { settles.push({ outcome, cancelReason: context.cancelReason }) }
    }
  })
  const actor = createActor(machine, { input: { requestId: 'r' } })
  actor.start()
  return { actor, calls, settles }
}

t.test('the machine arms the first-chunk stall bound on entry and the idle bound on every chunk', async (t) => {
  const { actor, calls } = recorded()
  actor.send({ type: 'CHUNK', delta: 'a' })
  actor.send({ type: 'CHUNK', delta: 'b' })
  t.same(calls, ['stall:first', 'chunk:a', 'stall:idle', 'chunk:b', 'stall:idle'])
})

t.test('a stall before or after the first chunk settles once as stalled', async (t) => {
  for (const chunks of [0, 2]) {
    const { actor, settles } = recorded()
    for (let i = 0; i < chunks; i++) actor.send({ type: 'CHUNK', delta: String(i) })
    actor.send({ type: 'STALL' })
    actor.send({ type: 'DONE', content: 'late' })
    t.same(settles, [{ outcome: 'stalled', cancelReason: null }], `after ${chunks} chunks`)
    t.equal(actor.getSnapshot().status, 'done')
  }
})

t.test('Stop (CANCEL) and a client gone (ABORT) are both cancelled, told apart by their reason', async (t) => {
  const stop = recorded()
  stop.actor.send({ type: 'CANCEL' })
  t.same(stop.settles, [{ outcome: 'cancelled', cancelReason: 'client_cancelled' }])
  const gone = recorded()
  gone.actor.send({ type: 'ABORT' })
  t.same(gone.settles, [{ outcome: 'cancelled', cancelReason: 'client_gone' }])
})

t.test('a detached chat waits for its client: ATTACH disarms the grace, GRACE_OVER cancels it as client_gone', async (t) => {
  const back = recorded()
  back.actor.send({ type: 'DETACH' })
  back.actor.send({ type: 'CHUNK', delta: 'x' })
  back.actor.send({ type: 'ATTACH' })
  back.actor.send({ type: 'GRACE_OVER' })
  t.same(back.calls, ['stall:first', 'grace:on', 'chunk:x', 'stall:idle', 'grace:off'], 'chunks still flow while detached')
  t.same(back.settles, [], 'a late GRACE_OVER after ATTACH does nothing')
  const away = recorded()
  away.actor.send({ type: 'DETACH' })
  away.actor.send({ type: 'GRACE_OVER' })
  t.same(away.settles, [{ outcome: 'cancelled', cancelReason: 'client_gone' }])
  t.same(away.calls, ['stall:first', 'grace:on', 'grace:off'], 'the grace timer is disarmed on the way out')
})

t.test('a chat that settles while detached disarms its grace timer', async (t) => {
  const { actor, calls, settles } = recorded()
  actor.send({ type: 'DETACH' })
  actor.send({ type: 'DONE', content: 'all' })
  t.same(settles, [{ outcome: 'done', cancelReason: null }])
  t.same(calls, ['stall:first', 'grace:on', 'grace:off'])
})
