/**
 * Whether the database is usable, for health and readiness. Query outcomes update it as
 * they happen; a probe (SELECT 1) every DB_HEALTH_INTERVAL_MS notices recovery even when
 * readiness has turned traffic away. The probe is started by start() and stopped by stop().
 *
 * Outcomes arrive in the order operations end, not the order they began: after a freeze
 * thaws, a query that started during it can still fail (its own timeout) after newer ones
 * succeeded; in a partial outage, a query on an old connection can succeed after newer
 * connects failed. The status is the outcome of the most recently begun operation that has
 * ended: an outcome of an operation older than the one that last set it is stale evidence
 * and changes nothing (readiness would flap otherwise).
 */
import { sql, type Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'

export type DbStatus = 'up' | 'down'

export interface DbMonitor {
  start: () => void
  stop: () => void
  /** startedAt: performance.now() when the operation began; now if omitted. */
  markUp: (startedAt?: number) => void
  markDown: (err: unknown, startedAt?: number) => void
  readonly status: DbStatus
  /** Epoch ms since when the database has been down, or null. */
  readonly downSince: number | null
  readonly lastError: string | null
}

export function createDbMonitor (options: {
  db: Kysely<any>
  clock: Clock
  intervalMs: number
  log: Logger
  /** Runs before each probe (the schema migration, until it has succeeded once). */
  beforeProbe?: () => Promise<void>
}): DbMonitor {
  const { clock, log } = options
  let status: DbStatus = 'up'
  let downSince: number | null = null
  let lastError: string | null = null
  let timer: unknown = null
  let running = false
  let probing = false
  // Start time of the most recent successful operation (performance.now()).
  // Start time (performance.now()) of the operation whose outcome set the status last.
  let settledBy = -Infinity

  /** Whether an outcome of an operation begun at `startedAt` is newer evidence than the last. */
  function newer (startedAt: number, what: string): boolean {
    if (startedAt < settledBy) {
      log.debug({ what }, 'database outcome of an operation older than the latest one: ignored')
      return false
    }
    settledBy = startedAt
    return true
  }

  function markUp (startedAt: number = performance.now()): void {
    if (!newer(startedAt, 'success')) return
    if (status === 'up') return
    log.info({ down_ms: downSince === null ? 0 : clock.now() - downSince }, 'database reachable again')
    status = 'up'
    downSince = null
    lastError = null
  }

  function markDown (err: unknown, startedAt: number = performance.now()): void {
    if (!newer(startedAt, err instanceof Error ? err.message : String(err))) return
    lastError = err instanceof Error ? err.message : String(err)
    if (status === 'down') return
    status = 'down'
    downSince = clock.now()
    log.error({ err: lastError }, 'database unreachable')
  }

  function schedule (): void {
    if (!running) return
    timer = clock.setTimeout(probe, options.intervalMs)
  }

  function probe (): void {
    timer = null
    // One probe at a time: a hung server must not pile them up (each is bounded by the pool's timeouts).
    if (probing) { schedule(); return }
    probing = true
    const startedAt = performance.now()
    const before = options.beforeProbe?.() ?? Promise.resolve()
    before.then(async () => await sql`SELECT 1`.execute(options.db)).then(
      () => { probing = false; markUp(startedAt); schedule() },
      (err: unknown) => { probing = false; markDown(err, startedAt); schedule() }
    )
  }

  return {
    start () {
      if (running) return
      running = true
      schedule()
    },
    stop () {
      running = false
      if (timer !== null) clock.clearTimeout(timer)
      timer = null
    },
    markUp,
    markDown,
    get status () { return status },
    get downSince () { return downSince },
    get lastError () { return lastError }
  }
}
