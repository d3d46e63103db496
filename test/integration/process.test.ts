import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createTestDatabase } from '../fixtures/database.js'
import { spawnTs, waitExit, waitForLine } from '../fixtures/run-ts.js'

t.test('a bad environment value exits 78 with one line naming the variable', async (t) => {
  const child = spawnTs('src/main.ts', { CORS_ORIGINS: '["https://a.example",', LOG_LEVEL: 'silent' })
  const exit = await waitExit(child, 20_000)
  t.equal(exit.code, 78)
  const lines = exit.stderr.trim().split('\n')
  t.equal(lines.length, 1, 'exactly one line on stderr')
  t.match(lines[0], /^config: CORS_ORIGINS looks like a JSON array but does not parse .*\(example: CORS_ORIGINS=/)
  t.notMatch(exit.stderr, /at .*\.ts:\d+/, 'no stack trace')
})

t.test('SIGTERM shuts down gracefully with exit 0 and the MQTT session closed', async (t) => {
  const db = await createTestDatabase(t)
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-proc-'))
  chmodSync(dataDir, 0o755)
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const child = spawnTs('src/main.ts', { PORT: '0', HOST: '127.0.0.1', EMBEDDED_MQTT_PORT: '0', LOG_LEVEL: 'info', DATABASE_URL: db.url, DATA_DIR: dataDir })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = waitExit(child, 30_000)
  await waitForLine(child, /"to":"connected"/, 20_000)
  child.kill('SIGTERM')
  const exit = await exited
  t.equal(exit.code, 0)
  t.match(exit.stdout, /"to":"closed"/)
  t.match(exit.stdout, /shutdown complete/)
})

t.test('npm run migrate applies the schema to an empty database and exits 0, and again is a no-op', async (t) => {
  const db = await createTestDatabase(t)
  const first = await waitExit(spawnTs('src/migrate.ts', { DATABASE_URL: db.url, LOG_LEVEL: 'info' }), 30_000)
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, /0001_accounts_sessions_messages: Success/)
  const again = await waitExit(spawnTs('src/migrate.ts', { DATABASE_URL: db.url, LOG_LEVEL: 'info' }), 30_000)
  t.equal(again.code, 0, again.stderr)
  t.match(again.stdout, /schema already up to date/)
})

t.test('npm run migrate against an unreachable database exits 1 with one clear line', async (t) => {
  const exit = await waitExit(spawnTs('src/migrate.ts', { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', DB_ACQUIRE_TIMEOUT_MS: '500' }), 30_000)
  t.equal(exit.code, 1)
  t.match(exit.stderr, /^migrate: /)
})
