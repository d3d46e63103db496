import net from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { createTether } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { silentLogger } from '../../src/log.js'
import { createTestDatabase } from '../fixtures/database.js'
import { TEST_AUTH_SECRET } from '../fixtures/gateway.js'

async function backendsOn (url: string): Promise<number> {
  const name = new URL(url).pathname.slice(1)
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    const r = await client.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name])
    return r.rows[0].n as number
  } finally { await client.end() }
}

async function refused (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(false) })
    socket.once('error', () => { resolve(true) })
  })
}

t.test('a start that fails at the last step (HTTP port taken) undoes everything it had started', async (t) => {
  const db = await createTestDatabase(t)
  const blocker = net.createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const port = (blocker.address() as net.AddressInfo).port
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-data-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const config = loadConfig({
    PORT: String(port), HOST: '127.0.0.1', EMBEDDED_MQTT_PORT: '0', DATA_DIR: dataDir, DATABASE_URL: db.url,
    AUTH_SECRET: TEST_AUTH_SECRET, THREADS: '1', LOG_LEVEL: 'silent'
  })
  const log = silentLogger()
  // Watch which broker port the embedded broker announced, to check it is closed afterwards.
  let brokerPort: number | undefined
  const info = log.info.bind(log)
  log.info = ((fields: unknown, msg?: string) => {
    const f = fields as { url?: string }
    if (typeof msg === 'string' && msg.startsWith('embedded MQTT broker') && typeof f.url === 'string') brokerPort = Number(new URL(f.url).port)
    return info(fields as object, msg)
  }) as typeof log.info
  const tether = createTether(config, { log })
  await t.rejects(tether.start(), 'start() rejects')
  t.equal(await backendsOn(db.url), 0, 'no database connection is left open')
  t.ok(brokerPort !== undefined, 'the embedded broker had started')
  t.ok(await refused(brokerPort ?? 0), 'the embedded broker no longer listens')
  await tether.stop()
})
