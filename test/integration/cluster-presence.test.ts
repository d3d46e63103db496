/**
 * Gateways knowing each other (contract v1.1, "Several gateways") on one broker: each lists the
 * live ones on /api/health/cluster; a graceful stop takes a gateway off the list; a gateway
 * started with an INSTANCE_ID that a live gateway holds exits 78 with one line naming
 * INSTANCE_ID, and the live one is not disturbed; once it has stopped, the id is free again.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { createTestDatabase } from '../fixtures/database.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { spawnTs, waitExit } from '../fixtures/run-ts.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

const FAST = { CLUSTER_HEARTBEAT_MS: '200', MQTT_PROTOCOL: '3.1.1' }

async function ids (gw: Gateway): Promise<string[]> {
  const body = (await gw.request('GET', '/api/health/cluster')).json as { self: string, instances: Array<{ instance_id: string }> }
  return body.instances.map((i) => i.instance_id)
}

t.test('two gateways list each other; a graceful stop takes one off the list', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const a = await startGateway(t, { ...FAST, MQTT_URL: broker.url, INSTANCE_ID: 'gw-a' })
  const b = await startGateway(t, { ...FAST, MQTT_URL: broker.url, INSTANCE_ID: 'gw-b' })
  await waitFor(async () => (await ids(a)).length === 2 && (await ids(b)).length === 2, { what: 'each sees both' })
  const body = (await a.request('GET', '/api/health/cluster')).json
  t.equal(body.self, 'gw-a')
  t.same(body.instances.map((i: { instance_id: string }) => i.instance_id), ['gw-a', 'gw-b'])
  t.ok(body.instances.every((i: { since: string, last_seen_ms: number }) => !Number.isNaN(Date.parse(i.since)) && i.last_seen_ms >= 0))
  t.equal(await a.metric('tether_cluster_gateways'), 2)
  t.equal((await a.request('GET', '/api/status')).json.gateways, 2, 'the status page counts them')
  await b.tether.stop()
  await waitFor(async () => (await ids(a)).length === 1, { what: 'gw-b gone from gw-a\'s list' })
  t.same(await ids(a), ['gw-a'])
})

t.test('a second gateway with a live gateway\'s INSTANCE_ID exits 78 with one line, and the live one is not disturbed; after it stops, the id is free', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const w = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => w.stop())
  const live = await startGateway(t, { ...FAST, MQTT_URL: broker.url, INSTANCE_ID: 'gw-same' })
  await waitFor(async () => (await ids(live)).includes('gw-same'), { what: 'the live gateway announced' })
  const transitionsBefore = live.tether.link.recentTransitions().length

  const db = await createTestDatabase(t)
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-claim-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const env = { ...FAST, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', DATABASE_URL: db.url, DATA_DIR: dataDir, MQTT_URL: broker.url, INSTANCE_ID: 'gw-same', AUTH_SECRET: 'a'.repeat(64) }
  const child = spawnTs('src/main.ts', env)
  t.teardown(() => { child.kill('SIGKILL') })
  const exit = await waitExit(child, 60_000)
  t.equal(exit.code, 78)
  const lines = exit.stderr.trim().split('\n')
  t.equal(lines.length, 1, 'one line on stderr')
  t.match(lines[0], /^config: INSTANCE_ID "gw-same" is already used by a live gateway/)

  t.equal(live.tether.link.recentTransitions().length, transitionsBefore, 'the live gateway\'s link never moved')
  t.ok(live.tether.link.isUp)
  t.equal((await live.chat('still', 'here?')).status, 200, 'and it still answers chats')

  await live.tether.stop()
  const again = spawnTs('src/main.ts', { ...env, LOG_LEVEL: 'info' })
  t.teardown(() => { again.kill('SIGKILL') })
  const started = await new Promise<boolean>((resolve) => {
    let out = ''
    const timer = setTimeout(() => { resolve(false) }, 60_000)
    again.stdout?.on('data', (d: Buffer) => { out += d.toString(); if (/"to":"connected"/.test(out)) { clearTimeout(timer); resolve(true) } })
    again.on('exit', () => { clearTimeout(timer); resolve(false) })
  })
  t.ok(started, 'the same INSTANCE_ID starts once its holder has stopped')
  again.kill('SIGTERM')
  await waitExit(again, 30_000).catch(() => {})
})
