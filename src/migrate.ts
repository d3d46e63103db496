/**
 * `npm run migrate`: applies the schema migrations to DATABASE_URL (or to the embedded
 * server under DATA_DIR) and exits. The server also migrates at start-up; this is for
 * deploy pipelines that want the schema in place before the new version takes traffic.
 */
import { GATEWAY_CONFIG, type Config } from './config.js'
import { runTask } from './entry-point.js'
import type { Logger } from './log.js'

async function migrate (config: Config, log: Logger): Promise<void> {
  const { connectDatabase } = await import('./db/connect.js')
  const { migrateToLatest } = await import('./db/migrations.js')
  const { pool, close } = await connectDatabase({
    url: config.databaseUrl,
    dataDir: config.dataDir,
    embeddedPort: config.embeddedPgPort,
    log,
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
    await close()
  }
}

// Runs whenever loaded: this file is only ever a process's entry point (the import-all test skips it).
void runTask({ name: 'migrate', config: GATEWAY_CONFIG, env: process.env, run: migrate })
