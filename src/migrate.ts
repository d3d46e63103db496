/**
 * `npm run migrate`: applies the schema migrations to DATABASE_URL (or to the embedded
 * server under DATA_DIR) and exits. The server also migrates at start-up; this is for
 * deploy pipelines that want the schema in place before the new version takes traffic.
 */
import { ConfigError, EXIT_CONFIG, loadConfig } from './config.js'
import { createLogger } from './log.js'

async function migrate (): Promise<void> {
  let config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    throw err
  }
  const log = createLogger(config.logLevel)
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

migrate().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`migrate: ${err.message}\n`)
    process.exit(1)
  }
)
