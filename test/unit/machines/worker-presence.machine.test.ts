import t from 'tap'
import { createActor } from 'xstate'
import { workerPresenceMachine, type Heartbeat } from '../../../machines/worker-presence.machine.js'
import { CountingClock } from '../../fixtures/counting-clock.js'

const beat = (at: number, fields: Partial<Heartbeat> = {}): Heartbeat => ({ capacity: 4, inFlight: 0, heartbeatMs: 1000, draining: false, at, ...fields })

function start (clock: CountingClock, forgetAfterMs = 60_000): { actor: ReturnType<typeof createActor<typeof workerPresenceMachine>>, calls: string[] } {
  const calls: string[] = []
  const machine = workerPresenceMachine.provide({
    actions: {
      cameOnline: () => { calls.push('online') },
      wentSuspect: () => { calls.push('suspect') },
      wentOffline: () => { calls.push('offline') },
      forget: () => { calls.push('forget') }
    }
  })
  const actor = createActor(machine, { clock, input: { workerId: 'w', forgetAfterMs, beat: beat(clock.now()) } })
  actor.start()
  return { actor, calls }
}

const state = (actor: { getSnapshot: () => { value: unknown } }): string => {
  const v = actor.getSnapshot().value
  return typeof v === 'string' ? v : Object.keys(v as object)[0] as string
}

t.test('silent for 1.5 intervals is suspect, for 3 intervals offline, measured from the last heartbeat', async (t) => {
  const clock = new CountingClock()
  const { actor, calls } = start(clock)
  t.equal(state(actor), 'online')
  clock.advanceInSteps(1499)
  t.equal(state(actor), 'online')
  clock.advanceInSteps(1)
  t.equal(state(actor), 'suspect')
  clock.advanceInSteps(1499)
  t.equal(state(actor), 'suspect')
  clock.advanceInSteps(1)
  t.equal(state(actor), 'offline')
  t.same(calls, ['online', 'suspect', 'offline'])
  actor.stop()
})

t.test('each heartbeat restarts the silence timer without announcing the worker again', async (t) => {
  const clock = new CountingClock()
  const { actor, calls } = start(clock)
  for (let i = 0; i < 10; i++) {
    clock.advanceInSteps(1000)
    actor.send({ type: 'HEARTBEAT', beat: beat(clock.now(), { inFlight: i }) })
  }
  t.equal(state(actor), 'online')
  t.equal(actor.getSnapshot().context.reportedInFlight, 9)
  t.same(calls, ['online'])
  t.equal(clock.liveTimers, 1, 'one timer per worker')
  actor.stop()
})

t.test('the interval is the worker\'s own: a 200 ms worker is offline after 600 ms', async (t) => {
  const clock = new CountingClock()
  const { actor } = start(clock)
  actor.send({ type: 'HEARTBEAT', beat: beat(clock.now(), { heartbeatMs: 200 }) })
  clock.advanceInSteps(599)
  t.equal(state(actor), 'suspect')
  clock.advanceInSteps(1)
  t.equal(state(actor), 'offline')
  actor.stop()
})

t.test('a heartbeat brings a suspect or offline worker back online; coming back from offline resets since', async (t) => {
  const clock = new CountingClock()
  const { actor, calls } = start(clock)
  clock.advanceInSteps(1600)
  actor.send({ type: 'HEARTBEAT', beat: beat(clock.now()) })
  t.equal(state(actor), 'online')
  t.equal(actor.getSnapshot().context.since, 0, 'a late heartbeat is not a new arrival')
  clock.advanceInSteps(5000)
  t.equal(state(actor), 'offline')
  actor.send({ type: 'HEARTBEAT', beat: beat(clock.now()) })
  t.equal(state(actor), 'online')
  t.equal(actor.getSnapshot().context.since, clock.now())
  t.same(calls, ['online', 'suspect', 'online', 'suspect', 'offline', 'online'])
  actor.stop()
})

t.test('the last will (GONE) makes it offline at once, once; offline long enough it is forgotten', async (t) => {
  const clock = new CountingClock()
  const { actor, calls } = start(clock, 10_000)
  actor.send({ type: 'GONE', at: clock.now() })
  actor.send({ type: 'GONE', at: clock.now() })
  t.equal(state(actor), 'offline')
  clock.advanceInSteps(10_000)
  t.equal(state(actor), 'forgotten')
  t.equal(actor.getSnapshot().status, 'done')
  t.same(calls, ['online', 'offline', 'forget'])
  t.equal(clock.liveTimers, 0, 'no timer left')
})
