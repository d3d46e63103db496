/**
 * The one read-only view of the running gateway that health (/api/health, /readyz,
 * /api/health/mqtt), the metrics' gauges and the status page all read, so that they cannot
 * disagree about what they see. Built once by src/app/runtime.ts from the live parts; plain
 * objects stand in for it in unit tests.
 */
import type { LinkStateName } from '../machines/mqtt-link.machine.js'
import type { LinkTransition } from './mqtt/mqtt-link.js'
import type { FleetSummary, WorkerView } from './fleet/worker-fleet.js'

export interface LinkView {
  readonly state: LinkStateName
  readonly isUp: boolean
  readonly downSince: number | null
  readonly lastActivityAt: number
  readonly attempts: number
  readonly maxAttempts: number
  readonly clientId: string
  /** host:port of the broker node in use (MQTT_URL may list several). */
  readonly broker: string
  nextAttemptInMs: () => number
  recentTransitions: () => readonly LinkTransition[]
}

export interface DbView {
  /** `migrating` until the schema is in place, whatever the probe says. */
  status: 'up' | 'down' | 'migrating'
  /** The probe's verdict alone: the server answers `SELECT 1` (tether_db_up). */
  reachable: boolean
  downSince: number | null
  pool: { total: number, idle: number, waiting: number, checkedOut: number }
  /** Group-committed chat writes: waiting, in the batch being committed, and the bound on waiting. */
  writes: { queued: number, committing: number, maxQueued: number, cacheBytes: number }
}

export interface RuntimeView {
  now: () => number
  startedAt: number
  link: LinkView
  pendingTotal: () => number
  pendingBySession: () => Record<string, number>
  lagP99Ms: () => number
  /** Event-loop delay p99 above this degrades health (EVENT_LOOP_LAG_DEGRADED_MS). */
  lagDegradedMs: number
  memory: () => { rss: number, heapUsed: number }
  /** Resident memory above this degrades health; 0: no limit (MEMORY_SOFT_LIMIT_MB). */
  memorySoftLimitBytes: number
  shuttingDown: () => boolean
  /** Open WebSockets on one endpoint. */
  websockets: (endpoint: 'hints' | 'chat') => number
  /** Sessions with at least one hints socket (each is one MQTT subscription). */
  hintSessions: () => number
  db: () => DbView
  /** Resumable streams kept, the bytes their replay buffers hold, and the bound on those bytes. */
  streams: () => { count: number, bytes: number, maxBytes: number }
  /** The announced LLM workers: counts by state, capacity and chats in flight, and each one. */
  workers: () => FleetSummary & { mode: 'auto' | 'required' | 'off', announced: boolean }
  workerList: () => WorkerView[]
  /** Live gateways on this broker, this one included (/api/health/cluster). */
  gateways: () => number
}
