/**
 * The PostgreSQL pool, with the discipline a leaked or exhausted pool taught: a bounded wait
 * for a connection (DB_ACQUIRE_TIMEOUT_MS, then db_unavailable), statement_timeout and
 * idle_in_transaction_session_timeout on every connection, a client-side bound just above
 * the statement timeout for a server that stops answering, and a connection that failed at
 * the connection level is destroyed on release instead of being handed to the next caller.
 * kysely releases every checkout on every path (its executor uses try/finally).
 */
import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient } from 'kysely'
import pg from 'pg'
import { isConnectionFailure } from './db-errors.js'
import type { Database } from './schema.js'

export interface DbPoolOptions {
  url: string
  size: number
  acquireTimeoutMs: number
  statementTimeoutMs: number
  idleInTxTimeoutMs: number
  /**
   * Statements run as named prepared statements, by their exact text: parsed and planned once
   * per connection instead of on every run. For the hot path's fixed texts (chat-writes.ts),
   * where planning was a quarter of each statement's time.
   */
  prepared?: ReadonlyMap<string, string>
  /** Seconds spent waiting for a connection, for the acquire-latency histogram. */
  onAcquire?: (seconds: number) => void
  /** The server or a connection to it failed (not a statement timeout, constraint or syntax error). */
  /** startedAt: performance.now() when the failed operation began (outcomes arrive out of order). */
  onUnavailable?: (err: unknown, startedAt: number) => void
  onSuccess?: (startedAt: number) => void
  /** An idle pooled connection died (the server restarted, say); pg would throw it otherwise. */
  onIdleError?: (err: Error) => void
}

export interface PoolStats { total: number, idle: number, waiting: number, checkedOut: number }

export interface DbPool {
  readonly db: Kysely<Database>
  stats: () => PoolStats
  end: () => Promise<void>
}

export function createDbPool (options: DbPoolOptions): DbPool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.size,
    connectionTimeoutMillis: options.acquireTimeoutMs,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statementTimeoutMs,
    idle_in_transaction_session_timeout: options.idleInTxTimeoutMs,
    // A frozen server cannot enforce statement_timeout; this bounds the wait from our side.
    query_timeout: options.statementTimeoutMs + 1000,
    keepAlive: true,
    application_name: 'tether'
  })
  pool.on('error', (err) => { options.onIdleError?.(err) })
  let checkedOut = 0

  const disciplined: PostgresPool = {
    async connect (): Promise<PostgresPoolClient> {
      const started = performance.now()
      // Every connection in use: a timeout now means "busy", not "down".
      const exhausted = pool.totalCount >= options.size
      let client: pg.PoolClient
      try {
        client = await pool.connect()
      } catch (err) {
        if (!exhausted) options.onUnavailable?.(err, started)
        throw err
      } finally {
        options.onAcquire?.((performance.now() - started) / 1000)
      }
      checkedOut++
      let broken = false
      let released = false
      // pg-pool takes its own 'error' listener off a client while it is checked out; a
      // connection that dies in that window (server restart, idle-in-transaction timeout)
      // would otherwise be an uncaught 'error' event and end the process.
      const onError = (err: Error): void => {
        broken = true
        options.onUnavailable?.(err, performance.now())
      }
      client.on('error', onError)
      return {
        query: (async (sqlText: string, parameters: readonly unknown[]) => {
          const queryStarted = performance.now()
          try {
            const name = options.prepared?.get(sqlText)
            const result = name === undefined
              ? await client.query(sqlText, parameters as unknown[])
              : await client.query({ name, text: sqlText, values: parameters as unknown[] })
            options.onSuccess?.(queryStarted)
            return result
          } catch (err) {
            // A statement timeout (57014) is the caller's 503 but says nothing about the
            // server or this connection; a connection-level failure says both.
            if (isConnectionFailure(err)) {
              broken = true
              options.onUnavailable?.(err, queryStarted)
            }
            throw err
          }
        }) as unknown as PostgresPoolClient['query'],
        release () {
          if (released) return
          released = true
          checkedOut--
          client.off('error', onError)
          // release(err) destroys the connection: a timed-out query may still be running on it.
          client.release(broken ? new Error('connection failed; discarded') : undefined)
        }
      }
    },
    end: () => pool.end()
  }

  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: disciplined }) })
  return {
    db,
    stats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, checkedOut }),
    end: () => db.destroy()
  }
}
