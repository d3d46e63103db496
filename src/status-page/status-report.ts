/**
 * What GET /api/status says: one snapshot for the live status page (src/status-page/page.ts),
 * from the same live sources as /api/health plus the counters of the metrics registry.
 * Counters are totals since start; the page derives rates from two snapshots, so nothing
 * here keeps state between requests (and several viewers do not disturb each other).
 */
import { carriesChats } from '../../machines/mqtt-link.machine.js'
import { computeHealth, computeMqttHealth, type HealthStatus } from '../health.js'
import type { RuntimeView } from '../runtime-view.js'
import { MONITORING_PATHS } from '../http/route-table.js'

/** One labelled value of a prom-client metric (what `metric.get()` lists). */
export interface Sample {
  labels: Partial<Record<string, string | number>>
  value: number
}

export interface StatusCounters {
  /** tether_http_responses_total */
  httpResponses: readonly Sample[]
  /** tether_chat_requests_total */
  chatOutcomes: readonly Sample[]
  /** tether_ws_connections */
  wsConnections: readonly Sample[]
  /** tether_limits_refused_total */
  limitsRefused?: readonly Sample[]
  /** tether_handler_errors_total */
  handlerErrors?: readonly Sample[]
  /** tether_stream_takeovers_total */
  takeovers?: readonly Sample[]
}


const STATUS_CLASSES = ['2xx', '3xx', '4xx', '5xx'] as const

export interface StatusReport {
  status: HealthStatus
  timestamp: string
  uptime_s: number
  /** Why chats cannot be served right now, in words; empty when they can. */
  outage: string[]
  issues: string[]
  link: {
    state: string
    /** Whether the link carries chats (carriesChats: connected, or stale while a probe runs). */
    connected: boolean
    client_id: string
    /**
     * Up: when the link last came up (a return from stale does not count), if still among the
     * recent transitions. Down: when it went down, however many attempts ago.
     */
    since: string | null
    last_activity_seconds_ago: number
    reconnect_attempts: number
    max_attempts: number
    next_attempt_in_ms: number
    /** Oldest first, as /api/health/mqtt lists them. */
    recent_transitions: Array<{ from: string, to: string, at: string, reason: string | null }>
  }
  pending_requests: number
  /** Resumable streams kept and their replay buffers against STREAM_BUFFER_MAX_BYTES. */
  streams: { count: number, buffer_bytes: number, buffer_max_bytes: number }
  /** Live gateways on this broker, this one included (/api/health/cluster). */
  gateways: number
  /** Streams clients resumed here that another gateway had started, by how they ended (tether_stream_takeovers_total), since start. */
  takeovers: Record<string, number>
  /** Announced LLM workers: how they are used (WORKER_PRESENCE), counts by state, capacity, and this gateway's chats on them. */
  workers: { mode: string, announced: boolean, online: number, suspect: number, offline: number, capacity: number, in_flight: number }
  websockets: { hints: number, chat: number, hint_sessions: number }
  event_loop: { lag_p99_ms: number, lag_degraded_ms: number }
  memory: { rss_bytes: number, heap_used_bytes: number }
  db: {
    status: string
    pool: { total: number, idle: number, in_use: number, waiting: number }
    /** Group-committed chat writes waiting and committing, and the bound on waiting (DB_WRITE_QUEUE_MAX). */
    writes: { queued: number, committing: number, max_queued: number, history_cache_bytes: number }
  }
  /** Totals since start; monitoring routes (route-table MONITORING_PATHS) are not counted. */
  http_responses: Record<(typeof STATUS_CLASSES)[number], number>
  /** Chat requests by outcome (done, worker_error, link_down, shutdown, timed_out, stalled, cancelled), since start. */
  chats: Record<string, number>
  /** Fair-share and abuse limits that refused something, and handlers of peer input that threw, since start. */
  protection: { refused: Record<string, number>, handler_errors: number }
}

function writesOf (src: RuntimeView): StatusReport['db']['writes'] {
  const w = src.db().writes
  return { queued: w.queued, committing: w.committing, max_queued: w.maxQueued, history_cache_bytes: w.cacheBytes }
}

export function computeStatus (src: RuntimeView, counters: StatusCounters): StatusReport {
  const health = computeHealth(src).body
  const mqtt = computeMqttHealth(src) as {
    client_id: string
    reconnection: { attempts: number, max_attempts: number, next_attempt_in_ms: number }
    recent_transitions: StatusReport['link']['recent_transitions']
    subscribers: { hint_sessions: number }
  }
  const transitions = mqtt.recent_transitions
  const up = carriesChats(health.mqtt.state)
  const cameUp = transitions.findLast((tr) => tr.to === 'connected' && tr.from !== 'stale')
  const downSince = src.link.downSince
  const since = up
    ? (cameUp?.at ?? null)
    : (downSince === null ? null : new Date(downSince).toISOString())

  const outage: string[] = []
  const state = health.mqtt.state
  if (!up) {
    outage.push(`MQTT link ${state}: chats are answered 503 llm_unavailable until it is connected again`)
  }
  if (health.db.status !== 'up') {
    outage.push(health.db.status === 'migrating'
      ? 'Database not migrated yet (unreachable since start-up): chats and accounts are answered 503 db_unavailable'
      : 'Database down: chats and accounts are answered 503 db_unavailable')
  }
  const fleet = src.workers()
  if ((fleet.mode === 'required' || (fleet.mode === 'auto' && fleet.announced)) && fleet.online === 0) {
    outage.push('No LLM worker online: chats are answered 503 no_workers until one sends a heartbeat')
  }
  if (src.shuttingDown()) outage.push('Shutting down: new chats are answered 503 shutting_down')

  const http = Object.fromEntries(STATUS_CLASSES.map((c) => [c, 0])) as StatusReport['http_responses']
  for (const { labels, value } of counters.httpResponses) {
    // Left out, or the rates would mostly show the status page (one request a second per
    // viewer) and the orchestrator's probes.
    if (MONITORING_PATHS.has(String(labels.route))) continue
    const cls = `${String(labels.status).charAt(0)}xx` as keyof typeof http
    if (cls in http) http[cls] += value
  }
  const chats: Record<string, number> = {}
  for (const { labels, value } of counters.chatOutcomes) chats[String(labels.outcome)] = value
  const refused: Record<string, number> = {}
  for (const { labels, value } of counters.limitsRefused ?? []) if (value > 0) refused[String(labels.limit)] = value
  const takeovers: Record<string, number> = {}
  for (const { labels, value } of counters.takeovers ?? []) if (value > 0) takeovers[String(labels.result)] = value
  let handlerErrors = 0
  for (const { value } of counters.handlerErrors ?? []) handlerErrors += value
  const ws = (endpoint: string): number => counters.wsConnections.find((s) => s.labels.endpoint === endpoint)?.value ?? 0

  return {
    status: health.status,
    timestamp: health.timestamp,
    uptime_s: health.uptime_s,
    outage,
    issues: health.issues,
    link: {
      state,
      connected: health.mqtt.connected,
      client_id: mqtt.client_id,
      since,
      last_activity_seconds_ago: health.mqtt.last_activity_seconds_ago,
      reconnect_attempts: mqtt.reconnection.attempts,
      max_attempts: mqtt.reconnection.max_attempts,
      next_attempt_in_ms: mqtt.reconnection.next_attempt_in_ms,
      recent_transitions: transitions
    },
    pending_requests: health.mqtt.pending_requests,
    streams: (() => { const s = src.streams(); return { count: s.count, buffer_bytes: s.bytes, buffer_max_bytes: s.maxBytes } })(),
    gateways: src.gateways(),
    takeovers,
    workers: (() => { const w = src.workers(); return { mode: w.mode, announced: w.announced, online: w.online, suspect: w.suspect, offline: w.offline, capacity: w.capacity, in_flight: w.in_flight } })(),
    websockets: { hints: ws('hints'), chat: ws('chat'), hint_sessions: mqtt.subscribers.hint_sessions },
    event_loop: { lag_p99_ms: health.event_loop.lag_p99_ms, lag_degraded_ms: src.lagDegradedMs },
    memory: { rss_bytes: health.memory.rss_bytes, heap_used_bytes: health.memory.heap_used_bytes },
    db: { ...health.db, writes: writesOf(src) },
    http_responses: http,
    chats,
    protection: { refused, handler_errors: handlerErrors }
  }
}
