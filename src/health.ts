/**
 * What /api/health and /api/health/mqtt say, computed from the runtime view. Pure given the
 * view, so the status rules (contract: Precise rules, /api/health status) are unit-tested.
 */
import { carriesChats, type LinkStateName } from '../machines/mqtt-link.machine.js'
import type { RuntimeView } from './runtime-view.js'

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy'

/** A link down this long (or givingUp) makes the service unhealthy: 503 for load balancers. */
export const LINK_DOWN_UNHEALTHY_MS = 30_000
/** /api/health/mqtt lists at most this many of the caller's sessions in pending_requests.by_session. */
export const BY_SESSION_LIMIT = 100

export interface HealthReport {
  httpStatus: 200 | 503
  body: {
    status: HealthStatus
    timestamp: string
    uptime_s: number
    mqtt: { state: LinkStateName, connected: boolean, last_activity_seconds_ago: number, reconnect_attempts: number, pending_requests: number }
    db: { status: string, pool: { total: number, idle: number, in_use: number, waiting: number } }
    event_loop: { lag_p99_ms: number }
    /** Announced LLM workers (contract v1.1): online ones, their free-for-new-chats capacity, and this gateway's chats on them. */
    workers: { online: number, capacity: number, in_flight: number }
    memory: { rss_bytes: number, heap_used_bytes: number, soft_limit_bytes: number | null }
    issues: string[]
  }
}

function secondsSince (now: number, t: number): number {
  return Math.max(0, Math.round((now - t) / 100) / 10)
}

export function computeHealth (src: RuntimeView): HealthReport {
  const now = src.now()
  const { link } = src
  const issues: string[] = []
  let status = 'healthy' as HealthStatus
  const worsen = (to: HealthStatus): void => {
    if (to === 'unhealthy' || (to === 'degraded' && status === 'healthy')) status = to
  }

  if (src.shuttingDown()) {
    issues.push('shutting down')
    worsen('unhealthy')
  }
  if (link.state === 'givingUp') {
    issues.push(`mqtt link giving up after ${link.attempts} reconnect attempts; still retrying every cap interval`)
    worsen('unhealthy')
  } else if (!carriesChats(link.state)) {
    const downMs = link.downSince === null ? 0 : now - link.downSince
    issues.push(`mqtt link ${link.state} for ${Math.round(downMs / 1000)}s`)
    worsen(downMs >= LINK_DOWN_UNHEALTHY_MS ? 'unhealthy' : 'degraded')
  }
  // `stale` is a probe in progress (every idle keepalive period has one): chats still flow,
  // so it is healthy; a probe that fails makes the link `reconnecting`, which is not.
  const db = src.db()
  if (db.status !== 'up') {
    const downMs = db.downSince === null ? 0 : now - db.downSince
    issues.push(db.status === 'migrating' ? 'database schema not migrated yet (database unreachable at start-up)' : `database unreachable for ${Math.round(downMs / 1000)}s`)
    worsen('unhealthy')
  }
  const workers = src.workers()
  // With presence in use, no worker online means every chat is refused: nobody is answering.
  if ((workers.mode === 'required' || (workers.mode === 'auto' && workers.announced)) && workers.online === 0) {
    issues.push(workers.suspect > 0 ? `no LLM worker online (${workers.suspect} suspect)` : 'no LLM worker online')
    worsen('degraded')
  }
  const lag = src.lagP99Ms()
  if (lag > src.lagDegradedMs) {
    issues.push(`event loop lag p99 ${lag} ms over ${src.lagDegradedMs} ms`)
    worsen('degraded')
  }
  const memory = src.memory()
  if (src.memorySoftLimitBytes > 0 && memory.rss > src.memorySoftLimitBytes) {
    issues.push(`resident memory ${Math.round(memory.rss / 1048576)} MB over the soft limit of ${Math.round(src.memorySoftLimitBytes / 1048576)} MB`)
    worsen('degraded')
  }

  return {
    httpStatus: status === 'unhealthy' ? 503 : 200,
    body: {
      status,
      timestamp: new Date(now).toISOString(),
      uptime_s: Math.round((now - src.startedAt) / 1000),
      mqtt: {
        state: link.state,
        connected: link.isUp,
        last_activity_seconds_ago: secondsSince(now, link.lastActivityAt),
        reconnect_attempts: link.attempts,
        pending_requests: src.pendingTotal()
      },
      db: { status: db.status, pool: { total: db.pool.total, idle: db.pool.idle, in_use: db.pool.checkedOut, waiting: db.pool.waiting } },
      event_loop: { lag_p99_ms: lag },
      workers: { online: workers.online, capacity: workers.capacity, in_flight: workers.in_flight },
      memory: { rss_bytes: memory.rss, heap_used_bytes: memory.heapUsed, soft_limit_bytes: src.memorySoftLimitBytes > 0 ? src.memorySoftLimitBytes : null },
      issues
    }
  }
}

/** The /api/health/workers body: the fleet as this gateway sees it, each worker with its state. */
export function computeWorkersHealth (src: RuntimeView): Record<string, unknown> {
  const w = src.workers()
  return {
    mode: w.mode,
    online: w.online,
    suspect: w.suspect,
    offline: w.offline,
    capacity: w.capacity,
    in_flight: w.in_flight,
    workers: src.workerList()
  }
}

/**
 * The /api/health/mqtt body. The endpoint is public, and a session id is a credential in relay
 * mode (it opens that session's hints socket), so `by_session` lists only the sessions that
 * `visible` admits — the caller's own, when it sent a token — and counts stand in for the rest.
 */
export function computeMqttHealth (src: RuntimeView, visible: (sessionId: string) => boolean = () => false): Record<string, unknown> {
  const now = src.now()
  const { link } = src
  const all = Object.entries(src.pendingBySession())
  let most = 0
  for (const [, n] of all) if (n > most) most = n
  const bySession = all
    .filter(([sessionId]) => visible(sessionId))
    .sort((a, b) => b[1] - a[1])
    .slice(0, BY_SESSION_LIMIT)
  return {
    state: link.state,
    connected: link.isUp,
    client_id: link.clientId,
    broker: link.broker,
    last_activity: { timestamp: new Date(link.lastActivityAt).toISOString(), seconds_ago: secondsSince(now, link.lastActivityAt) },
    reconnection: { attempts: link.attempts, max_attempts: link.maxAttempts, next_attempt_in_ms: link.nextAttemptInMs() },
    pending_requests: { total: src.pendingTotal(), sessions: all.length, max_per_session: most, by_session: Object.fromEntries(bySession) },
    subscribers: { hint_sessions: src.hintSessions(), total_websockets: src.websockets('hints') + src.websockets('chat') },
    recent_transitions: link.recentTransitions().map((t) => ({ from: t.from, to: t.to, at: new Date(t.at).toISOString(), reason: t.reason }))
  }
}
