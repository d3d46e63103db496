import { EventEmitter } from 'node:events'
import t from 'tap'
import { holdsFor, once, waitFor, withTimeout } from '../../fixtures/wait-for.js'

/** Timers alive in this process, to check that a helper leaves none behind. */
const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length

t.test('waitFor resolves with the first truthy value and leaves no timer', async (t) => {
  const before = timers()
  let calls = 0
  const value = await waitFor(() => (++calls >= 3 ? 'ready' : false), { intervalMs: 1, what: 'three calls' })
  t.equal(value, 'ready')
  t.equal(calls, 3)
  t.equal(timers(), before)
})

t.test('waitFor accepts async predicates', async (t) => {
  t.equal(await waitFor(async () => 42, { what: 'an answer' }), 42)
})

t.test('waitFor names what it waited for, and the last error, when it times out', async (t) => {
  const before = timers()
  await t.rejects(
    waitFor(() => { throw new Error('not yet') }, { timeoutMs: 30, intervalMs: 5, what: 'the moon' }),
    { message: 'timed out after 30 ms waiting for the moon (last error: not yet)' }
  )
  t.equal(timers(), before)
})

t.test('holdsFor resolves when the condition holds for the whole window', async (t) => {
  const before = timers()
  const started = Date.now()
  await holdsFor(() => true, { forMs: 30, what: 'truth' })
  t.ok(Date.now() - started >= 29, 'it watched for the whole window')
  t.equal(timers(), before)
})

t.test('holdsFor rejects as soon as the condition fails, naming it', async (t) => {
  let broken = false
  setImmediate(() => { broken = true })
  await t.rejects(holdsFor(() => !broken, { forMs: 5000, what: 'calm' }), /calm stopped holding after \d+ ms/)
})

t.test('once resolves with the event arguments and removes its listeners', async (t) => {
  const emitter = new EventEmitter()
  const fired = once(emitter, 'ping', 1000)
  emitter.emit('ping', 1, 'two')
  t.same(await fired, [1, 'two'])
  t.equal(emitter.listenerCount('ping'), 0)
  t.equal(emitter.listenerCount('error'), 0)
})

t.test('once rejects on an error event and on timeout', async (t) => {
  const emitter = new EventEmitter()
  const failed = once(emitter, 'ping', 1000)
  emitter.emit('error', new Error('boom'))
  await t.rejects(failed, /boom/)
  await t.rejects(once(emitter, 'ping', 10), /timed out after 10 ms waiting for event 'ping'/)
  t.equal(emitter.listenerCount('ping'), 0)
})

t.test('withTimeout passes a result through and names a promise that never settles', async (t) => {
  t.equal(await withTimeout(Promise.resolve('ok'), 1000, 'a quick answer'), 'ok')
  await t.rejects(withTimeout(new Promise(() => {}), 10, 'forever'), /timed out after 10 ms waiting for forever/)
})
