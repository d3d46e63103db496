import t from 'tap'
import { SimulatedClock } from 'xstate'
import { createPendingRegistry } from '../../../src/chat/pending-registry.js'

function registry (maxPending: number, maxPendingPerSession: number) {
  return createPendingRegistry({ maxPending, maxPendingPerSession, clock: new SimulatedClock() })
}

t.test('a reservation holds a place under the session cap until it is released or opened', async (t) => {
  const r = registry(10, 2)
  const a = r.reserve('s')
  const b = r.reserve('s')
  t.type(a, 'function')
  t.type(b, 'function')
  t.equal(r.reserve('s'), 'session_cap', 'two held places fill a cap of two')
  t.equal(r.admit('s'), 'session_cap')
  t.equal(r.admit('other'), 'ok', 'other sessions are not affected')
  ;(a as () => void)()
  ;(a as () => void)()
  t.equal(r.admit('s'), 'ok', 'released once (idempotent)')
  ;(b as () => void)()
  r.open('r1', 's', 1000, { onSettle: () => {} })
  r.open('r2', 's', 1000, { onSettle: () => {} })
  t.equal(r.reserve('s'), 'session_cap', 'open requests count too')
  r.failAll('shutdown')
})

t.test('reservations count against the total cap', async (t) => {
  const r = registry(2, 10)
  t.type(r.reserve('a'), 'function')
  t.type(r.reserve('b'), 'function')
  t.equal(r.reserve('c'), 'total_cap')
})
