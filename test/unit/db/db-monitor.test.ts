import t from 'tap'
import { SimulatedClock } from 'xstate'
import type { Kysely } from 'kysely'
import { createDbMonitor } from '../../../src/db/db-monitor.js'
import { silentLogger } from '../../../src/log.js'

function monitor () {
  // No probe runs in these tests (start() is never called), so the database is never touched.
  return createDbMonitor({ db: {} as unknown as Kysely<any>, clock: new SimulatedClock(), intervalMs: 1000, log: silentLogger() })
}

t.test('a failure turns the status down and a later success turns it up', async (t) => {
  const m = monitor()
  m.markDown(new Error('connection refused'), 10)
  t.equal(m.status, 'down')
  t.equal(m.lastError, 'connection refused')
  m.markUp(20)
  t.equal(m.status, 'up')
  t.equal(m.lastError, null)
})

t.test('a failure of an operation that began before the latest success does not turn the status down (a thaw must not flap readiness)', async (t) => {
  const m = monitor()
  m.markDown(new Error('frozen'), 10)
  m.markUp(30)
  // A query started during the freeze times out after the recovery was seen.
  m.markDown(new Error('query read timeout'), 15)
  t.equal(m.status, 'up', 'still up')
  t.equal(m.lastError, null, 'the stale error is not reported')
  // A failure of an operation that began after the success still counts.
  m.markDown(new Error('down again'), 31)
  t.equal(m.status, 'down')
  t.equal(m.lastError, 'down again')
})

t.test('a success of an operation older than the latest failure does not turn the status up (a partial outage must not flap readiness)', async (t) => {
  const m = monitor()
  m.markUp(50)
  m.markDown(new Error('new connections refused'), 60)
  t.equal(m.status, 'down')
  m.markUp(40)
  t.equal(m.status, 'down', 'a query begun before the failure, on an old connection, says nothing new')
  m.markUp(70)
  t.equal(m.status, 'up', 'a success begun after the failure does')
})
