import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createTether } from '../../src/app.js'
import { createTokens } from '../../src/auth/tokens.js'
import { systemClock } from '../../src/clock.js'
import { loadConfig } from '../../src/config.js'
import { silentLogger } from '../../src/log.js'
import { startTestBroker } from '../fixtures/broker.js'
import { proxiedDatabase } from '../fixtures/database.js'
import { startGateway, TEST_AUTH_SECRET, type Gateway } from '../fixtures/gateway.js'
import { echo, startScriptedWorker, type Behaviour } from '../fixtures/scripted-worker.js'
import type { TcpProxy } from '../fixtures/tcp-proxy.js'
import { waitFor } from '../fixtures/wait-for.js'

const ACQUIRE_MS = 500
const STATEMENT_MS = 1000
const HEALTH_INTERVAL_MS = 200
const DB_ENV = {
  DB_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_MS),
  DB_HEALTH_INTERVAL_MS: String(HEALTH_INTERVAL_MS),
  DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_MS),
  // The first password hash also starts the worker thread, which on a loaded machine can
  // outlast the default 5 s task deadline; these tests are not about that deadline.
  THREAD_TASK_TIMEOUT_MS: '30000'
}
/** Scheduling slack on a loaded test machine, on top of the timeouts that bound an answer. */
const SLACK_MS = 1000
/** A refused database: the connection fails at once, or at worst at the acquire timeout. */
const REFUSED_BOUND_MS = ACQUIRE_MS + SLACK_MS
/** A frozen database: a query is cut off client-side at statement timeout + 1 s (src/db/pool.ts). */
const FROZEN_BOUND_MS = ACQUIRE_MS + STATEMENT_MS + 1000 + SLACK_MS

interface Scope { teardown: (fn: () => unknown) => void }

/**
 * Records what reaches 'uncaughtException' during a test, so a crash inside the gateway is
 * reported as a failed assertion (see the pool unit test that pins it) instead of killing
 * this file before the outage behaviour is checked.
 */
function catchUncaught (t: Scope): Error[] {
  const caught: Error[] = []
  const record = (err: Error): void => { caught.push(err) }
  process.on('uncaughtException', record)
  t.teardown(() => { process.off('uncaughtException', record) })
  return caught
}

function gate (): { wait: Promise<void>, open: () => void } {
  let open!: () => void
  const wait = new Promise<void>((resolve) => { open = resolve })
  return { wait, open }
}

/** Echoes, except that messages starting with "held" are answered only once `release` opens. */
function heldEcho (release: Promise<void>): Behaviour {
  return async (request) => {
    if (request.content.startsWith('held')) await release
    return await echo(request)
  }
}

async function startBroker (t: Scope, behaviour: Behaviour): Promise<{ url: string, received: () => number }> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour })
  t.teardown(() => worker.stop())
  return { url: broker.url, received: () => worker.received.length }
}

interface Answer { route: string, startedAt: number, endedAt: number, ms: number, status: number, error: string | undefined }

interface Traffic {
  readonly answers: Answer[]
  stop: () => Promise<void>
}

/**
 * Keeps requests that need the database flowing on `lanes` connections (create a session,
 * list a session's messages, list sessions, chat) until stopped, each lane at most
 * `maxPerLane` requests.
 */
function startTraffic (gw: Gateway, sessionId: string, lanes = 6, maxPerLane = 5000): Traffic {
  const answers: Answer[] = []
  let stopped = false
  const json = { 'content-type': 'application/json' }
  const kinds = [
    { route: 'create session', send: () => gw.request('POST', '/api/chatbot/sessions', JSON.stringify({ title: 'flow' }), { headers: json }) },
    { route: 'list messages', send: () => gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`) },
    { route: 'list sessions', send: () => gw.request('GET', '/api/chatbot/sessions') },
    { route: 'chat', send: () => gw.request('POST', '/api/chatbot/messages', JSON.stringify({ session_id: sessionId, content: 'flowing' }), { headers: json }) }
  ]
  const lane = async (offset: number): Promise<void> => {
    for (let n = 0; n < maxPerLane && !stopped; n++) {
      const kind = kinds[(n + offset) % kinds.length] as (typeof kinds)[number]
      const startedAt = performance.now()
      const answer = await kind.send().then(
        (a) => ({ status: a.status, error: a.json?.error as string | undefined }),
        (err: Error) => ({ status: 0, error: `client error: ${err.message}` })
      )
      const endedAt = performance.now()
      answers.push({ route: kind.route, startedAt, endedAt, ms: endedAt - startedAt, ...answer })
    }
  }
  const running = Promise.all(Array.from({ length: lanes }, (_, i) => lane(i)))
  return {
    answers,
    async stop () { stopped = true; await running }
  }
}

const describe = (a: Answer): string => `${a.route}: ${a.status} ${a.error ?? ''} in ${Math.round(a.ms)} ms`

/** The answers to requests started after `since`, each 503 db_unavailable within `boundMs`; returns what is not. */
function notPromptlyUnavailable (answers: Answer[], since: number, until: number, boundMs: number): string[] {
  return answers
    .filter((a) => a.startedAt >= since && a.startedAt < until)
    .filter((a) => a.status !== 503 || a.error !== 'db_unavailable' || a.ms >= boundMs)
    .map(describe)
}

async function dbHealth (gw: Gateway): Promise<{ httpStatus: number, status: string, db: string }> {
  const health = await gw.request('GET', '/api/health')
  return { httpStatus: health.status, status: health.json?.status, db: health.json?.db?.status }
}

async function gatewayBehindProxy (t: Scope, behaviour: Behaviour): Promise<{ gw: Gateway, proxy: TcpProxy, worker: { received: () => number } }> {
  const { proxy, url } = await proxiedDatabase(t)
  const broker = await startBroker(t, behaviour)
  const gw = await startGateway(t, { MQTT_URL: broker.url, DATABASE_URL: url, MAX_PENDING_PER_SESSION: '50', ...DB_ENV })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 5000, what: 'link connected' })
  return { gw, proxy, worker: broker }
}

t.test('a database that goes away under traffic answers 503 db_unavailable promptly, reports itself down, and recovers by itself', async (t) => {
  const caught = catchUncaught(t)
  const release = gate()
  t.teardown(() => { release.open() })
  const { gw, proxy, worker } = await gatewayBehindProxy(t, heldEcho(release.wait))
  const sessionId = await gw.sessionId('main')
  t.equal((await gw.chat('main', 'before')).status, 200)
  t.equal(await gw.metric('tether_db_up'), 1)

  // Chats already past the database and waiting for the worker when the database goes.
  const held = [1, 2, 3].map(async (n) => await gw.chat(`held-${n}`, `held ${n}`))
  await waitFor(() => worker.received() >= 4, { timeoutMs: 5000, what: 'the held chats to reach the worker' })

  const traffic = startTraffic(gw, sessionId)
  t.teardown(() => traffic.stop())
  await waitFor(() => traffic.answers.filter((a) => a.status === 200 || a.status === 201).length >= 20, { timeoutMs: 10_000, what: 'traffic flowing' })
  // Cut while the gateway is inside a query, so some connections die checked out.
  await waitFor(() => gw.tether.database.stats().checkedOut > 0, { timeoutMs: 5000, intervalMs: 0, what: 'a connection in use' })
  const cutAt = performance.now()
  proxy.dropAll()
  proxy.refuse(true)

  await waitFor(async () => (await dbHealth(gw)).db === 'down', { timeoutMs: 5000, what: '/api/health to report the database down' })
  const health = await dbHealth(gw)
  t.same(health, { httpStatus: 503, status: 'unhealthy', db: 'down' }, '/api/health answers: unhealthy, db down')
  const ready = await gw.request('GET', '/readyz')
  t.equal(ready.status, 503, '/readyz 503')
  t.equal(ready.json?.db, 'down')
  t.equal((await gw.request('GET', '/livez')).status, 200, '/livez still answers')
  t.equal(await gw.metric('tether_db_up'), 0, 'tether_db_up 0')

  await waitFor(() => traffic.answers.filter((a) => a.startedAt > cutAt).length >= 40, { timeoutMs: 10_000, what: 'forty answers during the outage' })
  const outageEnd = performance.now()
  t.same(notPromptlyUnavailable(traffic.answers, cutAt, outageEnd, REFUSED_BOUND_MS).slice(0, 10), [],
    `every request started during the outage got 503 db_unavailable within ${REFUSED_BOUND_MS} ms`)
  const straddling = traffic.answers.filter((a) => a.startedAt < cutAt && a.endedAt >= cutAt)
  t.same(straddling.filter((a) => ![200, 201, 503].includes(a.status) || a.ms >= FROZEN_BOUND_MS).map(describe), [],
    `requests in flight at the cut (${straddling.length}) finished with a success or a 503, none hung`)

  // The worker answers the held chats now: storing the reply fails, and the client is told so.
  const released = performance.now()
  release.open()
  for (const answer of await Promise.all(held)) {
    t.equal(answer.status, 503, 'a reply that cannot be stored is a 503')
    t.equal(answer.json?.error, 'db_unavailable')
  }
  t.ok(performance.now() - released < REFUSED_BOUND_MS, 'held chats answered promptly once the worker replied')

  proxy.refuse(false)
  const recoveredAt = performance.now()
  await waitFor(async () => (await dbHealth(gw)).status === 'healthy', { timeoutMs: 5000, what: '/api/health healthy again' })
  t.equal((await gw.request('GET', '/readyz')).status, 200, '/readyz 200 again')
  t.equal(await gw.metric('tether_db_up'), 1, 'tether_db_up 1 again')
  await waitFor(() => traffic.answers.some((a) => a.startedAt > recoveredAt && a.status === 200), { timeoutMs: 5000, what: 'traffic succeeding again' })
  await traffic.stop()
  const after = await gw.chat('main', 'after')
  t.equal(after.status, 200, 'a chat works without restarting anything')
  t.equal(after.json?.reply?.content, 'echo: after')
  await waitFor(() => { const s = gw.tether.database.stats(); return s.checkedOut === 0 && s.waiting === 0 }, { timeoutMs: 5000, what: 'the pool to settle' })
  t.same(caught.map((e) => e.message), [], 'nothing escaped as an uncaught exception')
})

t.test('a frozen database answers 503 db_unavailable within the timeouts instead of hanging, and recovers once it thaws', async (t) => {
  const caught = catchUncaught(t)
  const { gw, proxy } = await gatewayBehindProxy(t, echo)
  const sessionId = await gw.sessionId('main')
  t.equal((await gw.chat('main', 'before')).status, 200)

  const traffic = startTraffic(gw, sessionId)
  t.teardown(() => traffic.stop())
  await waitFor(() => traffic.answers.filter((a) => a.status === 200 || a.status === 201).length >= 20, { timeoutMs: 10_000, what: 'traffic flowing' })
  const frozenAt = performance.now()
  proxy.pause()

  await waitFor(async () => (await dbHealth(gw)).db === 'down', { timeoutMs: FROZEN_BOUND_MS + 2000, what: '/api/health to report the database down' })
  t.same(await dbHealth(gw), { httpStatus: 503, status: 'unhealthy', db: 'down' }, '/api/health still answers: unhealthy, db down')
  t.equal((await gw.request('GET', '/readyz')).status, 503, '/readyz 503')
  t.equal((await gw.request('GET', '/livez')).status, 200, '/livez still answers')
  t.equal(await gw.metric('tether_db_up'), 0)

  // Requests started once the pool has seen the freeze: each is bounded by the acquire timeout
  // (no free connection, or a new one that never completes its start-up) or by the client-side
  // query bound (a pooled connection whose query is never answered).
  await waitFor(() => traffic.answers.filter((a) => a.startedAt > frozenAt).length >= 24, { timeoutMs: 20_000, what: 'two dozen answers while frozen' })
  const thawAt = performance.now()
  const during = traffic.answers.filter((a) => a.startedAt >= frozenAt && a.startedAt < thawAt)
  t.same(notPromptlyUnavailable(traffic.answers, frozenAt, thawAt, FROZEN_BOUND_MS).slice(0, 10), [],
    `every request started while frozen (${during.length}) got 503 db_unavailable within ${FROZEN_BOUND_MS} ms (slowest ${Math.round(Math.max(...during.map((a) => a.ms)))} ms)`)

  proxy.resume()
  await waitFor(async () => (await dbHealth(gw)).status === 'healthy', { timeoutMs: FROZEN_BOUND_MS + 2000, what: '/api/health healthy again' })
  t.equal((await gw.request('GET', '/readyz')).status, 200, '/readyz 200 again')
  await waitFor(() => traffic.answers.some((a) => a.startedAt > thawAt && a.status === 200), { timeoutMs: 5000, what: 'traffic succeeding again' })
  await traffic.stop()
  const stillFrozen = traffic.answers.filter((a) => a.startedAt < thawAt && a.endedAt > thawAt + FROZEN_BOUND_MS)
  t.same(stillFrozen.map(describe), [], 'no request outlived the freeze by more than its bound')
  const after = await gw.chat('main', 'after')
  t.equal(after.status, 200, 'a chat works without restarting anything')
  t.same(caught.map((e) => e.message), [], 'nothing escaped as an uncaught exception')
})

t.test('with no traffic at all, the health probe notices the outage and the recovery', async (t) => {
  const caught = catchUncaught(t)
  const { gw, proxy } = await gatewayBehindProxy(t, echo)
  t.equal((await dbHealth(gw)).db, 'up')
  // Nothing but the probe (SELECT 1 every DB_HEALTH_INTERVAL_MS) touches the database from here
  // on: /api/health and /readyz read the monitor and never query.
  const cutAt = performance.now()
  proxy.dropAll()
  proxy.refuse(true)
  await waitFor(async () => (await dbHealth(gw)).db === 'down', { timeoutMs: 5000, intervalMs: 20, what: 'the probe to notice the outage' })
  const noticedMs = performance.now() - cutAt
  t.ok(noticedMs < HEALTH_INTERVAL_MS + ACQUIRE_MS + SLACK_MS, `noticed within a probe interval and an acquire timeout (${Math.round(noticedMs)} ms)`)
  t.equal((await gw.request('GET', '/readyz')).status, 503)

  const backAt = performance.now()
  proxy.refuse(false)
  await waitFor(async () => (await dbHealth(gw)).db === 'up', { timeoutMs: 5000, intervalMs: 20, what: 'the probe to notice the recovery' })
  const recoveredMs = performance.now() - backAt
  t.ok(recoveredMs < HEALTH_INTERVAL_MS + SLACK_MS, `recovery noticed within a probe interval (${Math.round(recoveredMs)} ms)`)
  t.equal((await gw.request('GET', '/readyz')).status, 200)
  t.equal((await gw.chat('s', 'back')).status, 200)
  t.same(caught.map((e) => e.message), [], 'nothing escaped as an uncaught exception')
})

t.test('shutting down while the database is frozen under in-flight queries finishes within the query bound', async (t) => {
  const caught = catchUncaught(t)
  const { gw, proxy } = await gatewayBehindProxy(t, echo)
  const sessionId = await gw.sessionId('main')
  proxy.pause()
  const stuck = [
    gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`),
    gw.request('GET', '/api/chatbot/sessions'),
    gw.chat('main', 'into the freeze')
  ].map(async (p) => await p.then((a) => a.status, () => 'connection closed'))
  // Requests that find an idle pooled connection send their query into the freeze; the others
  // wait for a new connection that never finishes its start-up and give up at the acquire timeout.
  await waitFor(() => gw.tether.database.stats().checkedOut >= 1, { timeoutMs: 5000, what: 'a query stuck on the frozen database' })
  const started = performance.now()
  await gw.tether.stop()
  const ms = performance.now() - started
  t.ok(ms < FROZEN_BOUND_MS, `stop() finished in ${Math.round(ms)} ms (bound ${FROZEN_BOUND_MS} ms)`)
  const outcomes = await Promise.all(stuck)
  t.ok(outcomes.every((o) => o === 503 || o === 'connection closed'), `every stuck request ended: ${outcomes.join(', ')}`)
  t.same(caught.map((e) => e.message), [], 'nothing escaped as an uncaught exception')
})

/** A plain HTTP request (the gateway fixture needs a working database to log its user in). */
function request (port: number, method: string, path: string, body?: string, token?: string): Promise<{ status: number, json: any, headers: http.IncomingHttpHeaders, ms: number }> {
  const started = performance.now()
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, headers }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8')
        let json: unknown
        try { json = JSON.parse(text) } catch { json = undefined }
        resolve({ status: res.statusCode ?? 0, json, headers: res.headers, ms: performance.now() - started })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.test('a gateway started while its database is down starts anyway, answers 503, and migrates once the database answers', async (t) => {
  const caught = catchUncaught(t)
  const { proxy, url } = await proxiedDatabase(t)
  proxy.refuse(true)
  const broker = await startBroker(t, echo)
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-outage-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    DATA_DIR: dataDir,
    AUTH_SECRET: TEST_AUTH_SECRET,
    DATABASE_URL: url,
    MQTT_URL: broker.url,
    THREADS: '1',
    ...DB_ENV
  })
  const tether = createTether(config, { log: silentLogger() })
  const startedAt = performance.now()
  await tether.start()
  t.teardown(() => tether.stop())
  t.ok(performance.now() - startedAt < 10_000, 'start-up did not wait for the database')
  const port = tether.port

  t.equal((await request(port, 'GET', '/livez')).status, 200, '/livez answers')
  const health = await request(port, 'GET', '/api/health')
  t.equal(health.status, 503, '/api/health 503')
  t.equal(health.json?.status, 'unhealthy')
  t.match(health.json?.db?.status, /^(down|migrating)$/, `db reported ${health.json?.db?.status}`)
  t.equal((await request(port, 'GET', '/readyz')).status, 503, '/readyz 503')
  t.match(await tether.metrics.registry.metrics(), /^tether_db_up 0$/m, 'tether_db_up 0')

  // A valid token signed with the gateway's secret: authentication needs no database.
  const { token } = createTokens({ secret: TEST_AUTH_SECRET, ttlS: 3600, clock: systemClock }).sign('00000000-0000-4000-8000-000000000000', 'nobody')
  const refused = {
    'create session': await request(port, 'POST', '/api/chatbot/sessions', JSON.stringify({ title: 'early' }), token),
    'list sessions': await request(port, 'GET', '/api/chatbot/sessions', undefined, token),
    chat: await request(port, 'POST', '/api/chatbot/messages', JSON.stringify({ session_id: '00000000-0000-4000-8000-000000000001', content: 'hi' }), token),
    register: await request(port, 'POST', '/api/auth/register', JSON.stringify({ username: 'early', password: 'correct horse battery' }))
  }
  for (const [what, answer] of Object.entries(refused)) {
    t.equal(answer.status, 503, `${what}: 503`)
    t.equal(answer.json?.error, 'db_unavailable', `${what}: db_unavailable`)
    t.equal(answer.headers['retry-after'], '1', `${what}: Retry-After`)
    // Registration hashes the password on a pool thread before it reaches the database (the
    // first hash also starts the thread), so only the routes that go straight to it are timed.
    if (what !== 'register') t.ok(answer.ms < REFUSED_BOUND_MS, `${what}: promptly (${Math.round(answer.ms)} ms)`)
  }

  proxy.refuse(false)
  await waitFor(async () => (await request(port, 'GET', '/api/health')).json?.status === 'healthy', { timeoutMs: 10_000, what: 'the gateway to migrate and report healthy' })
  t.equal((await request(port, 'GET', '/readyz')).status, 200, '/readyz 200')
  const register = await request(port, 'POST', '/api/auth/register', JSON.stringify({ username: 'late', password: 'correct horse battery' }))
  t.equal(register.status, 201, 'the schema is there: registration works')
  const login = await request(port, 'POST', '/api/auth/login', JSON.stringify({ username: 'late', password: 'correct horse battery' }))
  t.equal(login.status, 200)
  const session = await request(port, 'POST', '/api/chatbot/sessions', JSON.stringify({ title: 'late' }), login.json.token)
  t.equal(session.status, 201)
  await waitFor(() => tether.link.isUp, { timeoutMs: 5000, what: 'link connected' })
  const chat = await request(port, 'POST', '/api/chatbot/messages', JSON.stringify({ session_id: session.json.id, content: 'finally' }), login.json.token)
  t.equal(chat.status, 200)
  t.equal(chat.json?.reply?.content, 'echo: finally')
  t.same(caught.map((e) => e.message), [], 'nothing escaped as an uncaught exception')
})
