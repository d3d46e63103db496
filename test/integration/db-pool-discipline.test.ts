import { sql } from 'kysely'
import pg from 'pg'
import t from 'tap'
import { classifyDbError } from '../../src/db/db-errors.js'
import { createDbPool, type DbPool, type PoolStats } from '../../src/db/pool.js'
import { startTestBroker } from '../fixtures/broker.js'
import { createTestDatabase } from '../fixtures/database.js'
import { startGateway, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

interface Scope { teardown: (fn: () => unknown) => void }

function fullyIdle (s: PoolStats): boolean {
  return s.checkedOut === 0 && s.waiting === 0 && s.idle === s.total
}

/** Resolves after `turns` trips through the event loop: the caller's patience, without a clock. */
function afterTurns (turns: number): Promise<void> {
  return new Promise((resolve) => {
    const step = (left: number): void => { if (left <= 0) resolve(); else setImmediate(() => { step(left - 1) }) }
    step(turns)
  })
}

/** Runs `count` tasks with at most `inFlight` at once (a bounded loop per lane). */
async function runBounded (count: number, inFlight: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      await task(i)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane))
}

async function gatewayWithWorker (t: Scope, env: Record<string, string> = {}): Promise<Gateway> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  // The first password hash also starts the worker thread, which on a loaded machine can
  // outlast the default 5 s task deadline; these tests are not about that deadline.
  const gw = await startGateway(t, { MQTT_URL: broker.url, THREAD_TASK_TIMEOUT_MS: '30000', ...env })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 5000, what: 'link connected' })
  return gw
}

type Outcome = 'ok' | 'syntax_error' | 'unique_violation' | 'statement_timeout' | 'rolled_back' | 'acquire_timeout' | 'unexpected'

function outcomeOf (err: unknown): Outcome {
  const code = (err as { code?: unknown })?.code
  if (code === '42601') return 'syntax_error'
  if (code === '23505') return 'unique_violation'
  if (code === '57014') return 'statement_timeout'
  if (err instanceof Error && err.message === 'rolled back on purpose') return 'rolled_back'
  // Waiting for a free connection, or for a new one to finish connecting, past the acquire timeout.
  if (err instanceof Error && /timeout exceeded when trying to connect|Connection terminated due to connection timeout/.test(err.message) && classifyDbError(err) === 'unavailable') return 'acquire_timeout'
  return 'unexpected'
}

t.test('ten thousand operations with injected failures and callers that give up leave the pool fully idle', async (t) => {
  const OPERATIONS = 10_000
  const IN_FLIGHT = 50
  const db = await createTestDatabase(t)
  const pool: DbPool = createDbPool({ url: db.url, size: 5, acquireTimeoutMs: 500, statementTimeoutMs: 50, idleInTxTimeoutMs: 5000 })
  t.teardown(() => pool.end())
  await sql`CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)`.execute(pool.db)
  await sql`INSERT INTO items VALUES (-1, 'taken')`.execute(pool.db)

  const counts = new Map<string, number>()
  const bump = (key: string): void => { counts.set(key, (counts.get(key) ?? 0) + 1) }
  const unexpected: string[] = []
  const committed: number[] = []
  const rolledBack: number[] = []
  // Work whose caller stopped waiting: it still runs, and must still give its connection back.
  const abandoned: Promise<unknown>[] = []

  const insert = (id: number): Promise<unknown> => sql`INSERT INTO items VALUES (${id}, 'x')`.execute(pool.db).then(() => { committed.push(id) })

  const operation = (i: number): { expect: Outcome, run: () => Promise<unknown> } => {
    switch (i % 20) {
      case 0: case 1: case 2: case 3:
        return { expect: 'ok', run: () => insert(i) }
      case 4: case 5:
        return { expect: 'ok', run: () => sql`SELECT count(*) FROM items WHERE id < ${i}`.execute(pool.db) }
      case 6:
        return { expect: 'syntax_error', run: () => sql`SELEC ${i}`.execute(pool.db) }
      case 7:
        return { expect: 'unique_violation', run: () => sql`INSERT INTO items VALUES (-1, 'again')`.execute(pool.db) }
      case 8:
        // One in a hundred sleeps past statement_timeout (57014); more would only add waiting.
        return i % 100 === 8
          ? { expect: 'statement_timeout', run: () => sql`SELECT pg_sleep(5)`.execute(pool.db) }
          : { expect: 'ok', run: () => sql`SELECT pg_sleep(0)`.execute(pool.db) }
      case 9: case 10:
        // A transaction that throws half-way: its insert must be rolled back.
        return {
          expect: 'rolled_back',
          run: () => pool.db.transaction().execute(async (trx) => {
            rolledBack.push(i)
            await sql`INSERT INTO items VALUES (${i}, 'never')`.execute(trx)
            throw new Error('rolled back on purpose')
          })
        }
      case 11:
        // A transaction failing in the server half-way (unique violation), then rolled back.
        return {
          expect: 'unique_violation',
          run: () => pool.db.transaction().execute(async (trx) => {
            rolledBack.push(i)
            await sql`INSERT INTO items VALUES (${i}, 'never')`.execute(trx)
            await sql`INSERT INTO items VALUES (-1, 'clash')`.execute(trx)
          })
        }
      case 12:
        return {
          expect: 'ok',
          run: () => pool.db.transaction().execute(async (trx) => {
            await sql`INSERT INTO items VALUES (${i}, 'tx')`.execute(trx)
            await sql`UPDATE items SET note = 'tx2' WHERE id = ${i}`.execute(trx)
          }).then(() => { committed.push(i) })
        }
      default:
        return { expect: 'ok', run: () => sql`SELECT ${i}::int AS n`.execute(pool.db) }
    }
  }

  const started = performance.now()
  await runBounded(OPERATIONS, IN_FLIGHT, async (i) => {
    const op = operation(i)
    // About a third of the callers give up after 0-15 event-loop turns (a client abort), most
    // before their answer: they stop waiting through an AbortSignal, the work carries on.
    if (i % 5 === 4 || i % 20 === 0 || i % 20 === 7 || i % 20 === 12) {
      const controller = new AbortController()
      const work = op.run()
      abandoned.push(work.then(() => { bump(`abandoned:ok`) }, (err: unknown) => {
        const got = outcomeOf(err)
        bump(`abandoned:${got}`)
        if (got !== op.expect && got !== 'acquire_timeout') unexpected.push(`#${i} (abandoned) expected ${op.expect}, got ${String((err as Error)?.message)}`)
      }))
      const gaveUp = new Promise<'gave up'>((resolve) => { controller.signal.addEventListener('abort', () => { resolve('gave up') }) })
      void afterTurns(i % 16).then(() => { controller.abort() })
      const first = await Promise.race([work.then(() => 'answered', () => 'answered'), gaveUp])
      bump(`caller ${first}`)
      return
    }
    let got: Outcome
    try {
      await op.run()
      got = 'ok'
    } catch (err) {
      got = outcomeOf(err)
      if (got === 'unexpected') unexpected.push(`#${i}: ${String((err as Error)?.message)}`)
    }
    bump(got)
    if (got !== op.expect && got !== 'acquire_timeout') unexpected.push(`#${i} expected ${op.expect}, got ${got}`)
  })
  await Promise.all(abandoned)
  const ms = performance.now() - started

  t.comment(`${OPERATIONS} operations in ${Math.round(ms)} ms: ${JSON.stringify(Object.fromEntries([...counts].sort()))}`)
  t.same(unexpected.slice(0, 10), [], 'every operation ended the way it was scripted to (or, under contention, at the acquire timeout)')
  // Acquire timeouts are not counted against the pool: a loaded machine makes some waiters
  // give up (and a waiter that gives up must leave nothing behind either). The mix itself must
  // have happened, though, or the idle pool below would prove little.
  t.ok((counts.get('caller gave up') ?? 0) > 0, 'some callers gave up before their answer')
  t.ok((counts.get('ok') ?? 0) > OPERATIONS / 4, 'most operations succeeded')
  for (const kind of ['syntax_error', 'unique_violation', 'statement_timeout', 'rolled_back'] as const) {
    t.ok((counts.get(kind) ?? 0) + (counts.get(`abandoned:${kind}`) ?? 0) > 0, `${kind} happened`)
  }

  const stats = pool.stats()
  t.equal(stats.checkedOut, 0, 'nothing checked out')
  t.equal(stats.waiting, 0, 'nobody waiting')
  t.equal(stats.idle, stats.total, `every connection idle (${JSON.stringify(stats)})`)
  t.ok(stats.total <= 5, 'never more connections than the pool size')

  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM items WHERE id >= 0`.execute(pool.db)
  t.equal(Number(rows[0]?.n), committed.length, 'exactly the committed rows exist')
  const { rows: leaked } = await sql<{ n: string }>`SELECT count(*) AS n FROM items WHERE id = ANY(${rolledBack})`.execute(pool.db)
  t.equal(Number(leaked[0]?.n), 0, 'no row of a rolled-back transaction survived')
  t.ok(fullyIdle(pool.stats()), 'and the final queries gave their connections back too')
})

t.test('hundreds of chat and session requests with clients hanging up mid-request leave the gateway pool idle', async (t) => {
  const REQUESTS = 400
  const IN_FLIGHT = 20
  // Chats share one session and one user: their caps (chats in flight, sessions created) are
  // raised so that they never answer first; this test is about the pool. Not to IN_FLIGHT: a
  // chat whose client hung up keeps its place until its queued write has committed, so the
  // gateway can hold more chats than the client has requests open.
  const gw = await gatewayWithWorker(t, { DB_POOL_SIZE: '4', MAX_PENDING_PER_SESSION: String(REQUESTS), MAX_PENDING_PER_USER: String(REQUESTS), SESSION_CREATE_PER_MINUTE: String(REQUESTS) })
  const known = await gw.sessionId('known')
  await gw.chat('known', 'seed the history')

  const statuses = new Map<string, number>()
  const bump = (key: string): void => { statuses.set(key, (statuses.get(key) ?? 0) + 1) }
  const wrong: string[] = []
  const json = { 'content-type': 'application/json' }

  const requestFor = (i: number): { method: string, path: string, body?: string, headers?: Record<string, string>, ok: number } => {
    switch (i % 5) {
      case 0: return { method: 'POST', path: '/api/chatbot/sessions', body: JSON.stringify({ title: `s${i}` }), headers: json, ok: 201 }
      case 1: return { method: 'GET', path: '/api/chatbot/sessions', ok: 200 }
      case 2: return { method: 'GET', path: `/api/chatbot/sessions/${known}/messages`, ok: 200 }
      default: return { method: 'POST', path: '/api/chatbot/messages', body: JSON.stringify({ session_id: known, content: `message ${i}` }), headers: json, ok: 200 }
    }
  }

  const started = performance.now()
  await runBounded(REQUESTS, IN_FLIGHT, async (i) => {
    const r = requestFor(i)
    // Two requests in five are dropped by their client at some point of their life: before
    // the bytes leave, while the gateway reads, queries the database or waits for the worker.
    const abort = i % 5 === 1 || i % 5 === 3 || (i % 10 === 0)
    const controller = new AbortController()
    if (abort) void afterTurns(i % 7).then(() => { controller.abort() })
    const answer = await gw.request(r.method, r.path, r.body, { ...(r.headers !== undefined ? { headers: r.headers } : {}), signal: controller.signal })
      .catch((err: Error) => { if (err.name === 'AbortError') return 'aborted' as const; throw err })
    if (answer === 'aborted') { bump('aborted'); return }
    bump(String(answer.status))
    if (answer.status !== r.ok) wrong.push(`${r.method} ${r.path}: ${answer.status} ${answer.text.slice(0, 200)}`)
  })
  t.comment(`${REQUESTS} requests in ${Math.round(performance.now() - started)} ms: ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.same(wrong.slice(0, 10), [], 'every request that was not dropped got its normal answer')
  t.ok((statuses.get('aborted') ?? 0) > 0, 'some clients hung up')

  // Work for requests whose clients left may still be finishing; it has to give back what it took.
  await waitFor(() => fullyIdle(gw.tether.database.stats()) && gw.tether.pending.size === 0, {
    timeoutMs: 10_000,
    what: `the gateway pool to be idle and nothing pending (${JSON.stringify(gw.tether.database.stats())})`
  })
  const health = await gw.request('GET', '/api/health')
  t.equal(health.json.db.status, 'up')
  t.equal(health.json.db.pool.in_use, 0, '/api/health: nothing in use')
  t.equal(health.json.db.pool.waiting, 0, '/api/health: nobody waiting')
  t.equal(health.json.db.pool.idle, health.json.db.pool.total)
  t.ok(health.json.db.pool.total <= 4, 'never more than DB_POOL_SIZE connections')
  const after = await gw.chat('known', 'still fine')
  t.equal(after.status, 200, after.text)
})

t.test('with the only connection held, a request gets 503 db_unavailable with Retry-After at the acquire timeout', async (t) => {
  const ACQUIRE_MS = 300
  const gw = await gatewayWithWorker(t, {
    DB_POOL_SIZE: '1',
    DB_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_MS),
    DB_STATEMENT_TIMEOUT_MS: '20000',
    // No probe while the test holds the connection: it would only queue behind it.
    DB_HEALTH_INTERVAL_MS: '600000'
  })
  await gw.sessionId('first')
  // Another client locks the sessions table; the gateway's one connection waits on that lock.
  const locker = new pg.Client({ connectionString: gw.databaseUrl })
  await locker.connect()
  locker.on('error', () => {})
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE chat_sessions IN ACCESS EXCLUSIVE MODE')
  let unlocked = false
  const unlock = async (): Promise<void> => { if (!unlocked) { unlocked = true; await locker.query('COMMIT') } }
  t.teardown(unlock)

  const held = gw.request('POST', '/api/chatbot/sessions', JSON.stringify({ title: 'blocked' }))
  await waitFor(async () => (await locker.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'tether' AND wait_event_type = 'Lock'")).rowCount === 1, {
    timeoutMs: 5000,
    what: 'the gateway connection to wait on the lock'
  })
  t.equal(gw.tether.database.stats().checkedOut, 1, 'the only connection is checked out')

  const check = (answer: HttpAnswer, what: string): void => {
    t.equal(answer.status, 503, `${what}: 503`)
    t.equal(answer.json?.error, 'db_unavailable', `${what}: db_unavailable`)
    t.equal(answer.headers['retry-after'], '1', `${what}: Retry-After`)
    t.ok(answer.ms >= ACQUIRE_MS - 20 && answer.ms < ACQUIRE_MS + 1000, `${what}: answered at the acquire timeout (${Math.round(answer.ms)} ms)`)
  }
  check(await gw.request('GET', '/api/chatbot/sessions'), 'list sessions')
  check(await gw.chat('first', 'hello'), 'chat')
  const live = await gw.request('GET', '/livez')
  t.equal(live.status, 200, '/livez does not need the database')

  await unlock()
  const unblocked = await held
  t.equal(unblocked.status, 201, 'the held request completes once the lock goes')
  await waitFor(() => fullyIdle(gw.tether.database.stats()), { timeoutMs: 5000, what: 'the pool to be idle' })
  const again = await gw.request('GET', '/api/chatbot/sessions')
  t.equal(again.status, 200)
})
