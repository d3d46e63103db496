/**
 * No secret in any log line: a gateway started with passwords in MQTT_URL and DATABASE_URL, and
 * one on the embedded broker with its generated accounts, run at debug level through start-up,
 * a chat and shutdown. Their whole output is searched for each password.
 */
import { mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Aedes } from 'aedes'
import t, { type Test } from 'tap'
import { createTestDatabase } from '../fixtures/database.js'
import { spawnTs, waitExit, waitForLine } from '../fixtures/run-ts.js'

const MQTT_SECRET = 'S3cret-mqtt-7f41c2'
const PG_SECRET = 'S3cret-pg-9a0b3e'

async function passwordBroker (t: Test): Promise<number> {
  const broker = await Aedes.createBroker()
  broker.authenticate = (_client, username, password, done) => { done(null, username === 'gw' && password?.toString() === MQTT_SECRET) }
  const server = net.createServer((socket) => { broker.handle(socket) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.close(() => { broker.close(() => resolve()) }) }))
  return (server.address() as net.AddressInfo).port
}

async function runGateway (t: Test, env: Record<string, string>): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-secrets-'))
  chmodSync(dataDir, 0o755)
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const child = spawnTs('src/main.ts', { PORT: '0', HOST: '127.0.0.1', EMBEDDED_MQTT_PORT: '0', LOG_LEVEL: 'debug', DATA_DIR: dataDir, ...env })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = waitExit(child, 60_000)
  await waitForLine(child, /"to":"connected"/, 30_000)
  child.kill('SIGTERM')
  const exit = await exited
  t.equal(exit.code, 0, 'started and stopped cleanly')
  let credentials = ''
  try { credentials = readFileSync(join(dataDir, 'mqtt-credentials.json'), 'utf8') } catch { /* an external broker: none */ }
  return `${exit.stdout}\n${exit.stderr}\n@@credentials@@${credentials}`
}

/** The URL with a password, and that password: the server's own if it has one (the embedded test server), else ours (trust auth ignores it). */
function withPassword (url: string): { url: string, password: string } {
  const u = new URL(url)
  if (u.password === '') u.password = PG_SECRET
  return { url: u.toString(), password: decodeURIComponent(u.password) }
}

t.test('passwords in MQTT_URL and DATABASE_URL never reach the log', async (t) => {
  const port = await passwordBroker(t)
  const db = await createTestDatabase(t)
  const pg = withPassword(db.url)
  const out = await runGateway(t, { MQTT_URL: `mqtt://gw:${MQTT_SECRET}@127.0.0.1:${port}`, DATABASE_URL: pg.url })
  const log = out.slice(0, out.indexOf('@@credentials@@'))
  t.match(log, /tether listening/, 'the start-up line is there')
  t.match(log, /mqtt:\/\/gw:\*\*\*\*@127\.0\.0\.1/, 'with the broker URL, password masked')
  t.notMatch(log, MQTT_SECRET, 'no MQTT password')
  t.notMatch(log, pg.password, 'no PostgreSQL password')
})

t.test('the embedded broker\'s generated passwords never reach the log', async (t) => {
  const db = await createTestDatabase(t)
  const out = await runGateway(t, { DATABASE_URL: db.url })
  const [log, credentials] = out.split('@@credentials@@') as [string, string]
  const accounts = JSON.parse(credentials) as Record<string, { password: string }>
  t.equal(Object.keys(accounts).length, 2, 'two accounts generated')
  for (const [role, { password }] of Object.entries(accounts)) t.notMatch(log, password, `the ${role} password is not logged`)
  t.match(log, /mqtt-credentials\.json/, 'the log says where the accounts are kept')
})
