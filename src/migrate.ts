/**
 * `npm run migrate`: applies the schema migrations to DATABASE_URL (or to the embedded
 * server under DATA_DIR) and exits. The server also migrates at start-up; this is for
 * deploy pipelines that want the schema in place before the new version takes traffic.
 */
import { GATEWAY_CONFIG, type Config } from './config.js'
import { isEntryPoint, runTask } from './entry-point.js'
import type { Logger } from './log.js'

async function migrate (config: Config, log: Logger): Promise<void> {
  const { startEmbeddedPostgres } = await import('./db/embedded-postgres.js')
  const { createDbPool } = await import('./db/pool.js')
  const { migrateToLatest } = await import('./db/migrations.js')
  const embedded = config.databaseUrl === undefined
    ? await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.embeddedPgPort, log })
    : null
  const pool = createDbPool({
    url: config.databaseUrl ?? (embedded as NonNullable<typeof embedded>).url,
    size: 1,
    acquireTimeoutMs: config.dbAcquireTimeoutMs,
    // Migrations may legitimately take longer than a request's statement budget.
    statementTimeoutMs: Math.max(config.dbStatementTimeoutMs, 600_000),
    idleInTxTimeoutMs: config.dbIdleInTxTimeoutMs
  })
  try {
    const result = await migrateToLatest(pool.db)
    const ran = (result.results ?? []).map((r) => `${r.migrationName}: ${r.status}`)
    log.info({ ran }, ran.length > 0 ? 'migrations applied' : 'schema already up to date')
  } finally {
    await pool.end()
    await embedded?.stop()
  }
}

if (isEntryPoint(import.meta.url)) {
  void runTask({ name: 'migrate', config: GATEWAY_CONFIG, env: process.env, run: migrate })
}
