import t from 'tap'
import type { LinkStateName } from '../../machines/mqtt-link.machine.js'
import { computeHealth, computeMqttHealth, LINK_DOWN_UNHEALTHY_MS } from '../../src/health.js'
import type { RuntimeView } from '../../src/runtime-view.js'
import { carriesChats } from '../../machines/mqtt-link.machine.js'

function sources (over: { state?: LinkStateName, downSince?: number | null, lag?: number, shuttingDown?: boolean, now?: number, db?: 'up' | 'down' | 'migrating', rss?: number } = {}): RuntimeView {
  const now = over.now ?? 1_000_000
  return {
    now: () => now,
    startedAt: now - 60_000,
    link: {
      state: over.state ?? 'connected',
      isUp: carriesChats(over.state ?? 'connected'),
      downSince: over.downSince ?? null,
      lastActivityAt: now - 1500,
      attempts: 3,
      maxAttempts: 10,
      clientId: 'gw',
      broker: '127.0.0.1:1883',
      nextAttemptInMs: () => 250,
      recentTransitions: () => [{ from: 'connecting', to: 'connected', at: now - 2000, reason: null }]
    },
    pendingTotal: () => 2,
    pendingBySession: () => ({ a: 1, b: 1 }),
    lagP99Ms: () => over.lag ?? 3,
    lagDegradedMs: 200,
    memory: () => ({ rss: over.rss ?? 100 * 1048576, heapUsed: 50 * 1048576 }),
    memorySoftLimitBytes: 512 * 1048576,
    shuttingDown: () => over.shuttingDown ?? false,
    websockets: () => 0,
    hintSessions: () => 0,
    streams: () => ({ count: 0, bytes: 0, maxBytes: 0 }),
    workers: () => ({ online: 0, suspect: 0, offline: 0, capacity: 0, in_flight: 0, mode: 'auto', announced: false }),
    workerList: () => [],
    gateways: () => 1,
    db: () => ({ status: over.db ?? 'up', reachable: over.db !== 'down', downSince: over.db === 'down' ? now - 4000 : null, pool: { total: 3, idle: 2, waiting: 0, checkedOut: 1 }, writes: { queued: 0, committing: 0, maxQueued: 10000, cacheBytes: 0 } })
  }
}

t.test('a connected link with a calm loop is healthy', async (t) => {
  const r = computeHealth(sources())
  t.equal(r.httpStatus, 200)
  t.equal(r.body.status, 'healthy')
  t.same(r.body.issues, [])
  t.equal(r.body.mqtt.last_activity_seconds_ago, 1.5)
  t.equal(r.body.uptime_s, 60)
})

t.test('a link reconnecting for under 30 s is degraded (200)', async (t) => {
  const r = computeHealth(sources({ state: 'reconnecting', downSince: 1_000_000 - 5000 }))
  t.equal(r.httpStatus, 200)
  t.equal(r.body.status, 'degraded')
  t.match(r.body.issues[0], /reconnecting for 5s/)
})

t.test('a link down for 30 s or more is unhealthy (503)', async (t) => {
  const r = computeHealth(sources({ state: 'reconnecting', downSince: 1_000_000 - LINK_DOWN_UNHEALTHY_MS }))
  t.equal(r.httpStatus, 503)
  t.equal(r.body.status, 'unhealthy')
})

t.test('givingUp is unhealthy at once', async (t) => {
  const r = computeHealth(sources({ state: 'givingUp', downSince: 1_000_000 - 1000 }))
  t.equal(r.body.status, 'unhealthy')
  t.equal(r.httpStatus, 503)
})

t.test('a stale link being probed is healthy (it carries chats); a lagging loop is degraded', async (t) => {
  const stale = computeHealth(sources({ state: 'stale' }))
  t.equal(stale.body.status, 'healthy', 'every idle keepalive period has a probe: no alarm for one')
  const lag = computeHealth(sources({ lag: 500 }))
  t.equal(lag.body.status, 'degraded')
  t.match(lag.body.issues[0], /event loop lag/)
})

t.test('an unreachable or unmigrated database is unhealthy (503), with the pool in the report', async (t) => {
  const down = computeHealth(sources({ db: 'down' }))
  t.equal(down.httpStatus, 503)
  t.equal(down.body.status, 'unhealthy')
  t.match(down.body.issues.join(' '), /database unreachable for 4s/)
  t.same(down.body.db, { status: 'down', pool: { total: 3, idle: 2, in_use: 1, waiting: 0 } })
  t.equal(computeHealth(sources({ db: 'migrating' })).body.status, 'unhealthy')
})

t.test('resident memory over the soft limit degrades health, and the report carries the figures', async (t) => {
  const over = computeHealth(sources({ rss: 600 * 1048576 }))
  t.equal(over.body.status, 'degraded')
  t.match(over.body.issues[0], /resident memory 600 MB over the soft limit of 512 MB/)
  t.same(over.body.memory, { rss_bytes: 600 * 1048576, heap_used_bytes: 50 * 1048576, soft_limit_bytes: 512 * 1048576 })
  t.equal(computeHealth(sources()).body.status, 'healthy')
})

t.test('shutting down is unhealthy', async (t) => {
  t.equal(computeHealth(sources({ shuttingDown: true })).body.status, 'unhealthy')
})

t.test('the mqtt view lists only the session ids the caller may see, and counts the rest', async (t) => {
  const m = computeMqttHealth(sources({}), (id) => id === 'b') as { pending_requests: unknown }
  t.same(m.pending_requests, { total: 2, sessions: 2, max_per_session: 1, by_session: { b: 1 } })
})

t.test('the mqtt view has the contract fields', async (t) => {
  const m = computeMqttHealth(sources({ state: 'reconnecting', downSince: 999_000 }))
  t.match(m, {
    state: 'reconnecting',
    connected: false,
    client_id: 'gw',
    last_activity: { seconds_ago: 1.5 },
    reconnection: { attempts: 3, max_attempts: 10, next_attempt_in_ms: 250 },
    pending_requests: { total: 2, sessions: 2, max_per_session: 1, by_session: {} },
    subscribers: { hint_sessions: 0, total_websockets: 0 }
  })
})
