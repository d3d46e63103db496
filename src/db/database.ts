/**
 * Opens the database Tether uses: the configured server or the embedded one, the
 * disciplined pool, migrations, the stores and the health monitor. A database that is down
 * at start-up does not stop the gateway: it reports db down, answers 503 db_unavailable to
 * what needs it, and migrates as soon as the server answers.
 */
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { createAccounts, type Accounts } from './accounts.js'
import { createChatStore, type ChatStore } from './chat-store.js'
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
  clock: Clock
  log: Logger
  onAcquire?: (seconds: number) => void
}

export interface Database {
  readonly url: string
  readonly accounts: Accounts
  readonly chats: ChatStore
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

  return {
    url,
    accounts: createAccounts(pool.db),
    chats: createChatStore(pool.db),
    monitor,
    get ready () { return ready },
    stats: pool.stats,
    async close () {
      monitor?.stop()
      await close()
    }
  }
}
