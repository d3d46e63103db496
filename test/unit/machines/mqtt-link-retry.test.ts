import t from 'tap'
import { createActor, SimulatedClock } from 'xstate'
import { mqttLinkMachine } from '../../../machines/mqtt-link.machine.js'

// Retry-After on a 503 is "time to the next reconnect attempt": the driver learns when each
// wait begins from noteRetryScheduled, which must fire for every wait, not only the first.
t.test('every reconnect wait, in reconnecting and in each givingUp cycle, is announced with its length', async (t) => {
  const clock = new SimulatedClock()
  const waits: { at: number, ms: number }[] = []
  const machine = mqttLinkMachine.provide({
    actions: { noteRetryScheduled: ({ context }) => { waits.push({ at: clock.now(), ms: context.retryDelayMs }) } }
  })
  const actor = createActor(machine, {
    clock,
    input: { maxReconnectAttempts: 1, backoffBaseMs: 100, backoffCapMs: 1000, connectTimeoutMs: 50, probeTimeoutMs: 50, random: () => 0.5 }
  })
  actor.start()
  t.teardown(() => { actor.stop() })
  actor.send({ type: 'CONNECTION_LOST', reason: 'refused' }) // first attempt failed
  t.same(waits, [{ at: 0, ms: 50 }], 'reconnecting: full-jitter wait of 0.5 x 100 ms')
  clock.increment(50) // -> connecting (attempt 1)
  actor.send({ type: 'CONNECTION_LOST', reason: 'refused' }) // attempts exhausted -> givingUp
  t.equal(actor.getSnapshot().value && Object.keys(actor.getSnapshot().value as object)[0], 'givingUp')
  t.same(waits.at(-1), { at: 50, ms: 1000 }, 'givingUp waits the cap')
  for (let cycle = 0; cycle < 3; cycle++) {
    clock.increment(1000) // -> attempting
    actor.send({ type: 'CONNECTION_LOST', reason: 'refused' }) // -> waiting again
  }
  t.equal(waits.length, 5, 'one announcement per wait')
  t.same(waits.slice(2).map((w) => w.ms), [1000, 1000, 1000])
})
