/**
 * The server a program uses and a pool to it: the configured PostgreSQL (DATABASE_URL), or the
 * embedded one under DATA_DIR started first. Shared by the gateway (database.ts) and the
 * migrator (src/migrate.ts); `close` ends the pool, then the embedded server.
 */
import type { Logger } from '../log.js'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './embedded-postgres.js'
import { createDbPool, type DbPool, type DbPoolOptions } from './pool.js'

export interface ConnectOptions extends Omit<DbPoolOptions, 'url'> {
  /** undefined: the embedded server under `dataDir`. */
  url: string | undefined
  dataDir: string
  embeddedPort: number
  log: Logger
}

export interface Connection {
  readonly url: string
  readonly pool: DbPool
  close: () => Promise<void>
}

export async function connectDatabase ({ url, dataDir, embeddedPort, log, ...poolOptions }: ConnectOptions): Promise<Connection> {
  const embedded: EmbeddedDatabase | null = url === undefined ? await startEmbeddedPostgres({ dataDir, port: embeddedPort, log }) : null
  const serverUrl = url ?? (embedded as EmbeddedDatabase).url
  const pool = createDbPool({ url: serverUrl, ...poolOptions })
  return {
    url: serverUrl,
    pool,
    async close () {
      await pool.end()
      await embedded?.stop()
    }
  }
}
