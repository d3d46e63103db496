import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { WATCHDOG_SIGNAL } from '../../src/watchdog/shared-state.js'
import { createTestDatabase } from '../fixtures/database.js'
import { spawnBuilt, spawnTs, waitExit, waitForLine } from '../fixtures/run-ts.js'
import { waitFor } from '../fixtures/wait-for.js'

async function startServer (t: { teardown: (fn: () => unknown) => void }, env: Record<string, string>) {
  const db = await createTestDatabase(t)
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-wd-'))
  chmodSync(dataDir, 0o755)
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  // The compiled server, as production runs it: signal handling must not depend on a loader.
  const child = spawnBuilt('src/main.ts', {
    PORT: '0', HOST: '127.0.0.1', EMBEDDED_MQTT_PORT: '0', LOG_LEVEL: 'info', DATABASE_URL: db.url, DATA_DIR: dataDir,
    AUTH_SECRET: 'watchdog-test-secret-watchdog-test-secret', TETHER_TEST_HOOKS: '1', ...env
  })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = waitExit(child, 60_000)
  const listening = JSON.parse(await waitForLine(child, /tether listening/, 30_000)) as { port: number }
  return { child, exited, port: listening.port }
}

function post (port: number, path: string): void {
  const req = http.request({ host: '127.0.0.1', port, method: 'POST', path, agent: false })
  req.on('error', () => {})
  req.end()
}

t.test('a blocked event loop is reported within the limit and the process ends with the watchdog signal', async (t) => {
  const stallMs = 1000
  const { child, exited, port } = await startServer(t, { WATCHDOG_STALL_MS: String(stallMs), WATCHDOG_EXIT: '1' })
  const blockedAt = Date.now()
  post(port, '/__test/block-event-loop')
  const line = JSON.parse(await waitForLine(child, /event loop stalled/, 10_000)) as Record<string, unknown>
  const exit = await exited
  const tookMs = Date.now() - blockedAt
  t.equal(exit.signal, WATCHDOG_SIGNAL, 'ended by the watchdog, not by a crash or a timeout')
  t.ok(tookMs < stallMs + 3000, `ended ${tookMs} ms after the loop was blocked (limit ${stallMs} ms)`)
  t.match(line, {
    level: 60,
    msg: /watchdog ending the process/,
    stall_ms: Number,
    last_route: '/__test/block-event-loop',
    pending_requests: 0,
    websockets: 0,
    rss_bytes: Number,
    heap_used_bytes: Number,
    watchdog_exit: true
  })
  t.ok((line.stall_ms as number) >= stallMs)
})

t.test('with WATCHDOG_EXIT off a stall is reported, the server carries on, and the stall is counted', async (t) => {
  const { child, port } = await startServer(t, { WATCHDOG_STALL_MS: '500', WATCHDOG_EXIT: '0' })
  post(port, '/__test/block-event-loop?ms=1500')
  const stalled = JSON.parse(await waitForLine(child, /event loop stalled/, 10_000)) as Record<string, unknown>
  t.match(stalled, { msg: /WATCHDOG_EXIT is off/, watchdog_exit: false })
  await waitForLine(child, /event loop resumed after a stall/, 10_000)
  const scrape = (): Promise<string> => new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => { resolve(body) })
    }).on('error', reject)
  })
  // The lag histogram is sampled once a second: wait for the sample that saw the stall (a
  // delay above the 1 s bucket), which may be the one after the stall ended.
  const bucket = (text: string, le: string): number => Number(new RegExp(`^tether_event_loop_delay_seconds_bucket\\{le="${le.replace('+', '\\+')}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN)
  const metrics = await waitFor(async () => {
    const text = await scrape()
    return bucket(text, '+Inf') > bucket(text, '1') ? text : null
  }, { timeoutMs: 10_000, intervalMs: 200, what: 'the stall in tether_event_loop_delay_seconds (a sample above 1 s)' })
  t.match(metrics, /^tether_watchdog_stalls_total 1$/m)
})

t.test('test hooks are refused in production', async (t) => {
  const exit = await waitExit(spawnTs('src/main.ts', { NODE_ENV: 'production', AUTH_SECRET: 'x'.repeat(40), TETHER_TEST_HOOKS: '1' }), 90_000)
  t.equal(exit.code, 78)
  t.match(exit.stderr, /^config: TETHER_TEST_HOOKS must not be set when NODE_ENV=production/)
})
