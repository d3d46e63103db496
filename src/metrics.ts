/**
 * The one Prometheus registry. Other modules do not import prom-client: they emit events
 * (link transitions, settlements, dropped replies, HTTP responses) and this module turns them
 * into series. Names follow tether_<area>_<what>_<unit>; no label ever holds an id.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { carriesChats, type LinkStateName } from '../machines/mqtt-link.machine.js'
import type { Settlement } from './chat/pending-registry.js'
import type { ReplyDrop } from './chat/dispatcher.js'
import type { MoveReason } from './chat/worker-routing.js'
import type { HandoffResult, TakeoverResult } from './cluster/stream-resume.js'
import type { PresenceDrop, WorkerState } from './fleet/worker-fleet.js'
import type { RuntimeView } from './runtime-view.js'

export const LINK_STATES: readonly LinkStateName[] = ['connecting', 'connected', 'stale', 'reconnecting', 'givingUp', 'closed']

export interface Metrics {
  readonly registry: Registry
  /** The runtime view the gauges read at each scrape. */
  setSources: (view: RuntimeView) => void
  linkTransition: (from: LinkStateName, to: LinkStateName) => void
  connectAttempt: () => void
  chatSettled: (s: Settlement) => void
  replyDropped: (reason: ReplyDrop) => void
  httpResponse: (route: string, status: number) => void
  dbAcquired: (seconds: number) => void
  /** A group-committed batch of chat writes (size, seconds to commit). */
  dbWriteBatch: (size: number, seconds: number) => void
  /** A batch that failed on one write's data, run again one write at a time. */
  dbWriteSplit: (size: number) => void
  /** A user turn's history came from the history cache (hit) or was read in the batch statement (miss). */
  historyLookup: (result: 'hit' | 'miss') => void
  /** Rows of batches whose commit was unknown, deleted once the database answered again. */
  dbWritesUndone: (rows: number) => void
  wsOpened: (endpoint: 'hints' | 'chat') => void
  wsClosed: (endpoint: 'hints' | 'chat', reason: string) => void
  wsRefused: (endpoint: 'hints' | 'chat', status: number) => void
  wsFrameRejected: (endpoint: 'hints' | 'chat', reason: string) => void
  hintPublished: () => void
  hintDropped: (reason: 'too_large' | 'too_deep') => void
  /** A handler of peer input threw and was caught (a bug to fix; the process stayed up). */
  handlerError: (handler: HandlerName) => void
  /** A fair-share or abuse limit refused something. */
  limitRefused: (limit: LimitName) => void
  sseSlowConsumer: () => void
  streamResumed: (result: 'attached' | 'ended' | 'not_found') => void
  cancelSent: (reason: string) => void
  /** A presence message on llm/workers/+ was dropped. */
  presenceDropped: (reason: PresenceDrop) => void
  /** An announced LLM worker changed state. */
  workerTransition: (to: WorkerState | 'forgotten') => void
  /** A chat refused at once: no worker online (none) or all at capacity (full). */
  noWorkers: (reason: 'none' | 'full') => void
  /** A chat moved to another worker before it was acknowledged. */
  chatMoved: (reason: MoveReason) => void
  /** A resume for a stream another gateway started: how this gateway got it, or did not. */
  streamTakeover: (result: TakeoverResult) => void
  /** Another gateway asked for a stream this one held, and got it. */
  streamHandoff: (result: HandoffResult) => void
  statePublished: () => void
  watchdogStall: (stallMs: number) => void
  /** The largest event-loop delay of the last sampling interval, in seconds. */
  loopDelaySample: (seconds: number) => void
}

const WORKER_STATES: readonly WorkerState[] = ['online', 'suspect', 'offline']

export const HANDLER_NAMES = ['ws_upgrade', 'ws_open', 'ws_message', 'ws_drain', 'ws_close', 'mqtt_message'] as const
export type HandlerName = typeof HANDLER_NAMES[number]
export const LIMIT_NAMES = ['pending_total', 'pending_session', 'pending_user', 'session_create', 'ws_user', 'register_address', 'register_share', 'db_write_queue'] as const
export type LimitName = typeof LIMIT_NAMES[number]

/** prom-client defaults that fail the Prometheus naming lint, and the gauge each sums. */
export const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'] as const

/** Outcome label values: bounded, and the same words docs/metrics.md uses. */
export function outcomeLabel (s: Settlement): string {
  if (s.outcome === 'failed') return s.cause ?? 'failed'
  if (s.outcome === 'handedOver') return 'handed_over'
  return s.outcome === 'timedOut' ? 'timed_out' : s.outcome
}

export function createMetrics (): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  // prom-client exports three gauges named *_total, which `promtool check metrics` (the lint
  // operators run) flags: a total is a counter's suffix. Each is the sum of a labelled gauge
  // it also exports (nodejs_active_handles{type} ...), so nothing is lost by dropping them.
  for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name)
  let sources: RuntimeView | null = null

  const linkState = new Gauge({
    name: 'tether_mqtt_link_state',
    help: 'MQTT link statechart state: 1 for the current state, 0 for the others.',
    labelNames: ['state'],
    registers: [registry],
    collect () {
      const current = sources?.link.state
      for (const s of LINK_STATES) this.set({ state: s }, s === current ? 1 : 0)
    }
  })
  void linkState
  new Gauge({
    name: 'tether_mqtt_link_carries_chats',
    help: '1 while the link can carry chats (connected, or stale while a probe runs: the rule admission and /readyz use), 0 while chats get 503.',
    registers: [registry],
    collect () { this.set(sources !== null && carriesChats(sources.link.state) ? 1 : 0) }
  })
  const transitions = new Counter({
    name: 'tether_mqtt_link_transitions_total',
    help: 'MQTT link state transitions.',
    labelNames: ['from', 'to'],
    registers: [registry]
  })
  const attempts = new Counter({
    name: 'tether_mqtt_connect_attempts_total',
    help: 'MQTT connection attempts, the first one included.',
    registers: [registry]
  })
  const reconnects = new Counter({
    name: 'tether_mqtt_reconnects_total',
    help: 'Times the MQTT link came back up after having been down.',
    registers: [registry]
  })
  new Gauge({
    name: 'tether_mqtt_reconnect_attempts',
    help: 'Reconnect attempts since the link was last connected.',
    registers: [registry],
    collect () { this.set(sources?.link.attempts ?? 0) }
  })
  new Gauge({
    name: 'tether_mqtt_last_activity_age_seconds',
    help: 'Seconds since anything arrived from the broker.',
    registers: [registry],
    collect () {
      if (sources !== null) this.set(Math.max(0, (sources.now() - sources.link.lastActivityAt) / 1000))
    }
  })
  const dropped = new Counter({
    name: 'tether_mqtt_replies_dropped_total',
    help: 'Replies dropped: malformed, too_large (over 8 MiB), unknown request id, or duplicate after the first done/error.',
    labelNames: ['reason'],
    registers: [registry]
  })
  new Gauge({
    name: 'tether_chat_pending_requests',
    help: 'Chat requests in flight.',
    registers: [registry],
    collect () { this.set(sources?.pendingTotal() ?? 0) }
  })
  const outcomes = new Counter({
    name: 'tether_chat_requests_total',
    help: 'Chat requests by how they ended: done, worker_error, link_down, shutdown, worker_lost, no_workers, timed_out, stalled, cancelled.',
    labelNames: ['outcome'],
    registers: [registry]
  })
  const duration = new Histogram({
    name: 'tether_chat_request_duration_seconds',
    help: 'Time from publishing a chat request to its end, by outcome.',
    labelNames: ['outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry]
  })
  new Gauge({
    name: 'tether_streams',
    help: 'Resumable streams kept: in flight, and finished within STREAM_RETAIN_MS.',
    registers: [registry],
    collect () { this.set(sources?.streams().count ?? 0) }
  })
  new Gauge({
    name: 'tether_stream_buffer_bytes',
    help: 'Bytes of chunk text held by all replay buffers (bounded by STREAM_BUFFER_MAX_BYTES).',
    registers: [registry],
    collect () { this.set(sources?.streams().bytes ?? 0) }
  })
  new Gauge({
    name: 'tether_stream_buffer_max_bytes',
    help: 'STREAM_BUFFER_MAX_BYTES: the bound on tether_stream_buffer_bytes.',
    registers: [registry],
    collect () { this.set(sources?.streams().maxBytes ?? 0) }
  })
  const resumes = new Counter({
    name: 'tether_stream_resumes_total',
    help: 'Resumes of a stream (WebSocket resume, GET /api/chatbot/streams), by result: attached (in flight), ended (replayed to its end), not_found (unknown, foreign, expired or no longer replayable).',
    labelNames: ['result'],
    registers: [registry]
  })
  const cancelsSent = new Counter({
    name: 'tether_chat_cancels_sent_total',
    help: 'Cancels published to LLM workers on llm/chat/cancel (or an announced worker\'s own cancel topic), by reason: client_cancelled, client_gone, deadline, stalled, shutdown, worker_lost.',
    labelNames: ['reason'],
    registers: [registry]
  })
  new Gauge({
    name: 'tether_workers',
    help: 'Announced LLM workers by presence state: online, suspect (a heartbeat late), offline (silent 3 intervals, or its last will). No worker ids: /api/health/workers lists them.',
    labelNames: ['state'],
    registers: [registry],
    collect () {
      const w = sources?.workers()
      for (const state of WORKER_STATES) this.set({ state }, w?.[state] ?? 0)
    }
  })
  new Gauge({
    name: 'tether_workers_capacity',
    help: 'Chats the online, non-draining announced LLM workers say they take at once, summed.',
    registers: [registry],
    collect () { this.set(sources?.workers().capacity ?? 0) }
  })
  new Gauge({
    name: 'tether_workers_in_flight',
    help: 'Chats this gateway has in flight on announced LLM workers.',
    registers: [registry],
    collect () { this.set(sources?.workers().in_flight ?? 0) }
  })
  new Gauge({
    name: 'tether_cluster_gateways',
    help: 'Live gateways on this broker, this one included (retained heartbeats on llm/gateways/+ under 3 intervals old).',
    registers: [registry],
    collect () { this.set(sources?.gateways() ?? 0) }
  })
  const presenceDropped = new Counter({
    name: 'tether_worker_presence_dropped_total',
    help: 'Presence messages on llm/workers/+ dropped: malformed, impostor (payload names another worker than its topic), absurd (capacity, in_flight or heartbeat_ms out of bounds), registry_full (WORKER_REGISTRY_MAX).',
    labelNames: ['reason'],
    registers: [registry]
  })
  const workerTransitions = new Counter({
    name: 'tether_worker_transitions_total',
    help: 'Announced LLM workers entering a presence state: online, suspect, offline, forgotten.',
    labelNames: ['to'],
    registers: [registry]
  })
  const noWorkers = new Counter({
    name: 'tether_chat_no_workers_total',
    help: 'Chats answered 503 no_workers at once: none (no announced worker online), full (all at capacity).',
    labelNames: ['reason'],
    registers: [registry]
  })
  const takeovers = new Counter({
    name: 'tether_stream_takeovers_total',
    help: 'Resumes of a stream another gateway started, by result: replayed (a finished stream the other gateway still kept), handed_over (a live one it gave up), worker (its worker re-sent it: the gateway that held it is gone), interrupted (nobody had it: stream_interrupted), refused (caps, link down, shutting down).',
    labelNames: ['result'],
    registers: [registry]
  })
  const handoffs = new Counter({
    name: 'tether_stream_handoffs_total',
    help: 'Streams this gateway gave to another gateway that a client resumed on, by kind: replayed (finished) or handed_over (live; its worker now answers the other gateway).',
    labelNames: ['result'],
    registers: [registry]
  })
  const moved = new Counter({
    name: 'tether_chat_moved_total',
    help: 'Chats moved to another LLM worker before being acknowledged: no_ack (CHAT_ACCEPT_TIMEOUT_MS), offline, busy, unrouted (MQTT 5 PUBACK: no subscriber).',
    labelNames: ['reason'],
    registers: [registry]
  })
  const responses = new Counter({
    name: 'tether_http_responses_total',
    help: 'HTTP responses by route template and status code.',
    labelNames: ['route', 'status'],
    registers: [registry]
  })

  // Label lookups hash the label set on every call; the label values are few and fixed, so
  // the labelled children are looked up once and kept (this runs on every request).
  const outcomeChildren = new Map<string, { count: { inc: () => void }, time: { observe: (v: number) => void } }>()
  const responseChildren = new Map<string, { inc: () => void }>()

  new Gauge({
    name: 'tether_db_up',
    help: '1 while the database answers, 0 while it does not.',
    registers: [registry],
    collect () { this.set(sources?.db().reachable === true ? 1 : 0) }
  })
  new Gauge({
    name: 'tether_db_pool_connections',
    help: 'PostgreSQL pool connections by state: idle, in_use (checked out) and total.',
    labelNames: ['state'],
    registers: [registry],
    collect () {
      const p = sources?.db().pool
      if (p === undefined) return
      this.set({ state: 'total' }, p.total)
      this.set({ state: 'idle' }, p.idle)
      this.set({ state: 'in_use' }, p.checkedOut)
    }
  })
  new Gauge({
    name: 'tether_db_pool_waiting_requests',
    help: 'Queries waiting for a free pool connection.',
    registers: [registry],
    collect () { this.set(sources?.db().pool.waiting ?? 0) }
  })
  const acquire = new Histogram({
    name: 'tether_db_pool_acquire_duration_seconds',
    help: 'Time to get a connection from the PostgreSQL pool (including failures at the acquire timeout).',
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5],
    registers: [registry]
  })

  const writeBatchSize = new Histogram({
    name: 'tether_db_write_batch_size',
    help: 'Chat writes (user turns, answers, partial answers) per group-committed statement.',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    registers: [registry]
  })
  const writeBatchSeconds = new Histogram({
    name: 'tether_db_write_batch_duration_seconds',
    help: 'Time from sending a batch of chat writes to its commit.',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry]
  })
  const writeSplits = new Counter({
    name: 'tether_db_write_batch_splits_total',
    help: 'Batches that failed on one write\'s data and were run again one write at a time (only the writes at fault fail).',
    registers: [registry]
  })
  new Gauge({
    name: 'tether_db_write_queue',
    help: 'Chat writes waiting for a batch (queued) and in the batch being committed (committing).',
    labelNames: ['state'],
    registers: [registry],
    collect () {
      const w = sources?.db().writes
      if (w === undefined) return
      this.set({ state: 'queued' }, w.queued)
      this.set({ state: 'committing' }, w.committing)
    }
  })
  const writesUndone = new Counter({
    name: 'tether_db_unsure_writes_undone_total',
    help: 'Rows of batches whose commit was unknown (the connection died after sending), deleted once the database answered again so that stored history matches the 503 their clients got.',
    registers: [registry]
  })
  const historyLookups = new Counter({
    name: 'tether_history_cache_lookups_total',
    help: 'Histories of new chats served from the history cache (hit) or read from PostgreSQL in the batch statement (miss).',
    labelNames: ['result'],
    registers: [registry]
  })
  const historyHit = historyLookups.labels({ result: 'hit' })
  const historyMiss = historyLookups.labels({ result: 'miss' })
  new Gauge({
    name: 'tether_history_cache_bytes',
    help: 'Memory held by the history cache (HISTORY_CACHE_MAX_BYTES bounds it).',
    registers: [registry],
    collect () { this.set(sources?.db().writes?.cacheBytes ?? 0) }
  })
  new Gauge({
    name: 'tether_db_write_queue_max',
    help: 'DB_WRITE_QUEUE_MAX: queued chat writes beyond which one more is refused with 503 overloaded.',
    registers: [registry],
    collect () { this.set(sources?.db().writes?.maxQueued ?? 0) }
  })

  new Gauge({
    name: 'tether_ws_connections',
    help: 'Open WebSockets by endpoint (hints, chat).',
    labelNames: ['endpoint'],
    registers: [registry],
    collect () {
      if (sources === null) return
      this.set({ endpoint: 'hints' }, sources.websockets('hints'))
      this.set({ endpoint: 'chat' }, sources.websockets('chat'))
    }
  })
  new Gauge({
    name: 'tether_ws_hint_subscriptions',
    help: 'Sessions with at least one hints socket, each holding one MQTT subscription.',
    registers: [registry],
    collect () { this.set(sources?.hintSessions() ?? 0) }
  })
  const wsOpens = new Counter({ name: 'tether_ws_opened_total', help: 'WebSockets opened, by endpoint.', labelNames: ['endpoint'], registers: [registry] })
  const wsCloses = new Counter({
    name: 'tether_ws_closed_total',
    help: 'WebSockets closed, by endpoint and reason: client, dropped (network, idle timeout), message_too_big, unsupported_data, slow_consumer, token_expired, policy_violation, shutting_down.',
    labelNames: ['endpoint', 'reason'],
    registers: [registry]
  })
  const wsRefusals = new Counter({ name: 'tether_ws_upgrades_refused_total', help: 'WebSocket upgrades refused before the 101, by endpoint and HTTP status.', labelNames: ['endpoint', 'status'], registers: [registry] })
  const wsRejected = new Counter({
    name: 'tether_ws_frames_rejected_total',
    help: 'Client frames rejected, by endpoint and reason: binary, too_big, malformed, unknown_type, invalid, rate_limited, link_down.',
    labelNames: ['endpoint', 'reason'],
    registers: [registry]
  })
  const hints = new Counter({ name: 'tether_ws_hints_published_total', help: 'Hints received from MQTT and published to their session\'s sockets (one per hint, not per socket).', registers: [registry] })
  const hintDrops = new Counter({ name: 'tether_ws_hints_dropped_total', help: 'Hints not passed on to sockets, by reason: too_large (over HINT_MAX_BYTES), too_deep (JSON nested deeper than 64 levels).', labelNames: ['reason'], registers: [registry] })
  const handlerErrors = new Counter({ name: 'tether_handler_errors_total', help: 'Handlers of peer input (WebSocket upgrade/open/message/drain/close, MQTT message) that threw; caught, logged, and the socket or message dropped. Any is a bug.', labelNames: ['handler'], registers: [registry] })
  for (const handler of HANDLER_NAMES) handlerErrors.inc({ handler }, 0)
  const limitRefusals = new Counter({ name: 'tether_limits_refused_total', help: 'Requests refused by a fair-share or abuse limit, by limit: pending_total, pending_session, pending_user, session_create, ws_user, register_address, register_share.', labelNames: ['limit'], registers: [registry] })
  for (const limit of LIMIT_NAMES) limitRefusals.inc({ limit }, 0)
  const sseSlow = new Counter({ name: 'tether_sse_slow_consumers_total', help: 'Server-sent-event answers ended because the reader fell SSE_MAX_BACKPRESSURE bytes behind (the chat is cancelled).', registers: [registry] })
  const states = new Counter({ name: 'tether_ws_state_published_total', help: 'State frames published to MQTT.', registers: [registry] })

  const stalls = new Counter({ name: 'tether_watchdog_stalls_total', help: 'Event-loop stalls past WATCHDOG_STALL_MS that the loop came back from (with WATCHDOG_EXIT on, the process ends instead).', registers: [registry] })
  const stallSeconds = new Histogram({ name: 'tether_watchdog_stall_duration_seconds', help: 'Length of the stalls the watchdog reported and the loop came back from.', buckets: [1, 2, 5, 10, 30, 60, 300], registers: [registry] })
  const loopDelay = new Histogram({
    name: 'tether_event_loop_delay_seconds',
    help: 'Largest event-loop delay in each one-second interval (perf_hooks monitorEventLoopDelay).',
    buckets: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
    registers: [registry]
  })
  new Gauge({
    name: 'tether_event_loop_lag_p99_seconds',
    help: 'Event-loop delay p99 over the last 30 s (what /api/health reports as event_loop.lag_p99_ms).',
    registers: [registry],
    collect () { this.set((sources?.lagP99Ms() ?? 0) / 1000) }
  })

  let wasDown = false
  return {
    watchdogStall (stallMs) { stalls.inc(); stallSeconds.observe(stallMs / 1000) },
    loopDelaySample (seconds) { loopDelay.observe(seconds) },
    wsOpened (endpoint) { wsOpens.inc({ endpoint }) },
    wsClosed (endpoint, reason) { wsCloses.inc({ endpoint, reason }) },
    wsRefused (endpoint, status) { wsRefusals.inc({ endpoint, status: String(status) }) },
    wsFrameRejected (endpoint, reason) { wsRejected.inc({ endpoint, reason }) },
    hintPublished () { hints.inc() },
    hintDropped (reason) { hintDrops.inc({ reason }) },
    handlerError (handler) { handlerErrors.inc({ handler }) },
    limitRefused (limit) { limitRefusals.inc({ limit }) },
    sseSlowConsumer () { sseSlow.inc() },
    streamResumed (result) { resumes.inc({ result }) },
    cancelSent (reason) { cancelsSent.inc({ reason }) },
    presenceDropped (reason) { presenceDropped.inc({ reason }) },
    workerTransition (to) { workerTransitions.inc({ to }) },
    noWorkers (reason) { noWorkers.inc({ reason }) },
    chatMoved (reason) { moved.inc({ reason }) },
    streamTakeover (result) { takeovers.inc({ result }) },
    streamHandoff (result) { handoffs.inc({ result }) },
    statePublished () { states.inc() },
    dbAcquired (seconds) { acquire.observe(seconds) },
    dbWriteBatch (size, seconds) { writeBatchSize.observe(size); writeBatchSeconds.observe(seconds) },
    dbWriteSplit () { writeSplits.inc() },
    dbWritesUndone (rows) { if (rows > 0) writesUndone.inc(rows) },
    historyLookup (result) { (result === 'hit' ? historyHit : historyMiss).inc() },
    registry,
    setSources (s) { sources = s },
    linkTransition (from, to) {
      transitions.inc({ from, to })
      if (to === 'reconnecting' || to === 'givingUp') wasDown = true
      if (to === 'connected' && from !== 'stale' && wasDown) { reconnects.inc(); wasDown = false }
    },
    connectAttempt () { attempts.inc() },
    chatSettled (s) {
      const outcome = outcomeLabel(s)
      let child = outcomeChildren.get(outcome)
      if (child === undefined) {
        child = { count: outcomes.labels({ outcome }), time: duration.labels({ outcome }) }
        outcomeChildren.set(outcome, child)
      }
      child.count.inc()
      child.time.observe((s.settledAt - s.startedAt) / 1000)
    },
    replyDropped (reason) { dropped.inc({ reason }) },
    httpResponse (route, status) {
      const key = `${status} ${route}`
      let child = responseChildren.get(key)
      if (child === undefined) {
        child = responses.labels({ route, status: String(status) })
        responseChildren.set(key, child)
      }
      child.inc()
    }
  }
}
