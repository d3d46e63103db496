/**
 * Opens the database Tether uses: the configured server or the embedded one, the
 * disciplined pool, migrations, the stores and the health monitor. A database that is down
 * at start-up does not stop the gateway: it reports db down, answers 503 db_unavailable to
 * what needs it, and migrates as soon as the server answers.
 */
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { createAccounts, type Accounts } from './accounts.js'
import { createLoginThrottleStore, type LoginThrottleStore } from './login-throttle-store.js'
import { createChatStore, type ChatStore } from './chat-store.js'
import { createChatWrites, PREPARED_STATEMENTS, type ChatWrites } from './chat-writes.js'
import { classifyDbError } from './db-errors.js'
import { createDbMonitor, type DbMonitor } from './db-monitor.js'
import { connectDatabase } from './connect.js'
import { migrateToLatest } from './migrations.js'
import type { PoolStats } from './pool.js'

export interface DatabaseOptions {
  url: string | undefined
  dataDir: string
  embeddedPort: number
  poolSize: number
  acquireTimeoutMs: number
  statementTimeoutMs: number
  idleInTxTimeoutMs: number
  healthIntervalMs: number
  /** Group commit of the chat writes (chat-writes.ts): DB_WRITE_BATCH_MAX, DB_WRITE_QUEUE_MAX. */
  writeBatchMax: number
  writeQueueMax: number
  /** HISTORY_MAX_MESSAGES and HISTORY_CACHE_MAX_BYTES, for the history cache of chat-writes.ts. */
  historyMax: number
  historyCacheMaxBytes: number
  clock: Clock
  log: Logger
  onAcquire?: (seconds: number) => void
  onWriteBatch?: (size: number, seconds: number) => void
  onWriteSplit?: (size: number) => void
  onWriteRefused?: () => void
  onHistory?: (result: 'hit' | 'miss') => void
  onWritesUndone?: (rows: number) => void
}

export interface Database {
  readonly url: string
  readonly accounts: Accounts
  /** The login limits' buckets, shared by every gateway on this database. */
  readonly loginThrottle: LoginThrottleStore
  readonly chats: ChatStore
  /** The chat hot path's writes, group-committed. */
  readonly writes: ChatWrites
  readonly writeQueueMax: number
  readonly monitor: DbMonitor
  /** False until migrations have run; requests that need the schema get 503 until then. */
  readonly ready: boolean
  stats: () => PoolStats
  close: () => Promise<void>
}

export async function openDatabase (options: DatabaseOptions): Promise<Database> {
  const { log } = options
  let monitor: DbMonitor | null = null
  const { url, pool, close } = await connectDatabase({
    url: options.url,
    dataDir: options.dataDir,
    embeddedPort: options.embeddedPort,
    log,
    size: options.poolSize,
    acquireTimeoutMs: options.acquireTimeoutMs,
    statementTimeoutMs: options.statementTimeoutMs,
    idleInTxTimeoutMs: options.idleInTxTimeoutMs,
    ...(options.onAcquire !== undefined ? { onAcquire: options.onAcquire } : {}),
    onUnavailable: (err, startedAt) => { monitor?.markDown(err, startedAt) },
    onSuccess: (startedAt) => { monitor?.markUp(startedAt) },
    prepared: PREPARED_STATEMENTS,
    onIdleError: (err) => { log.warn({ err: err.message }, 'idle database connection failed; it will be replaced') }
  })

  let ready = false
  let migrating: Promise<void> | null = null
  function ensureMigrated (): Promise<void> {
    if (ready) return Promise.resolve()
    migrating ??= migrateToLatest(pool.db).then(
      (result) => {
        ready = true
        const ran = (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
        log.info({ ran }, ran.length > 0 ? `database migrated (${ran.join(', ')})` : 'database schema up to date')
      },
      (err: unknown) => {
        migrating = null
        if (classifyDbError(err) !== 'unavailable') throw err
        log.error({ err: (err as Error).message }, 'database unreachable at start-up: will migrate once it answers')
      }
    )
    return migrating
  }

  monitor = createDbMonitor({ db: pool.db, clock: options.clock, intervalMs: options.healthIntervalMs, log, beforeProbe: ensureMigrated })
  await ensureMigrated()
  monitor.start()
  const writes = createChatWrites({
    db: pool.db,
    maxBatch: options.writeBatchMax,
    maxQueue: options.writeQueueMax,
    historyMax: options.historyMax,
    historyCacheMaxBytes: options.historyCacheMaxBytes,
    ...(options.onHistory !== undefined ? { onHistory: options.onHistory } : {}),
    ...(options.onWritesUndone !== undefined ? { onUndone: options.onWritesUndone } : {}),
    ...(options.onWriteBatch !== undefined ? { onBatch: options.onWriteBatch } : {}),
    ...(options.onWriteSplit !== undefined ? { onSplit: options.onWriteSplit } : {}),
    ...(options.onWriteRefused !== undefined ? { onRefused: options.onWriteRefused } : {})
  })

  return {
    url,
    accounts: createAccounts(pool.db),
    loginThrottle: createLoginThrottleStore(pool.db),
    chats: createChatStore(pool.db),
    writes,
    writeQueueMax: options.writeQueueMax,
    monitor,
    get ready () { return ready },
    stats: pool.stats,
    async close () {
      monitor?.stop()
      // Writes already accepted are committed (or fail on the pool's own bounds) before the
      // pool goes: a chat answered during the shutdown grace is stored.
      await writes.idle()
      await writes.close()
      await close()
    }
  }
}
