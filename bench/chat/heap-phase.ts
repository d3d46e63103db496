/**
 * Heap per pending request. The gateway runs in its own `node --expose-gc` process
 * (bench/heap-gateway.js) against the silent worker, so every chat it accepts stays pending.
 * A separate load-client process opens N connections with one request each; once the gateway's
 * `tether_chat_pending_requests` gauge reads N, the heap after two full GCs is compared with the
 * baseline taken after a warm-up, and the difference divided by the number pending.
 * The gateway runs CHAT_MODE=relay on the bench database: this phase measures the pending-request
 * path (which is the same in both modes), and relay needs no account or session rows.
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { forkNode, nextMessage, stop, sleep, waitUntil, type Started } from '../lib/proc.js'
import { gatewayDir, gatewayFile, missingGateway, waitReady } from '../lib/gateway.js'
import { isType } from '../lib/ipc.js'
import { metric } from '../lib/metrics.js'
import { chatGatewayEnv } from './gateway.js'
import { syntheticSessionIds } from './http-load.js'
import { runLoad, startHoldClient } from './load-runner.js'

export const HEAP_GATEWAY_JS = fileURLToPath(new URL('../heap-gateway.js', import.meta.url))
export const PENDING_GAUGE = 'tether_chat_pending_requests'

export interface HeapOptions {
  readonly mqttUrl: string
  readonly prefix: string
  readonly logDir: string
  readonly count: number
  readonly sessions: number
  readonly databaseUrl: string
  readonly dataDir: string
  readonly authSecret: string
  readonly warmupS: number
  readonly readyTimeoutMs: number
  /** Stops the echo worker and starts a silent one (after the warm-up). */
  readonly goSilent: () => Promise<void>
}

export interface HeapResult {
  readonly requested: number
  readonly sent: number
  /** Pending according to the gauge, or sent minus early answers/failures when there is no gauge. */
  readonly pending: number
  readonly pending_source: 'gauge' | 'sent'
  readonly early_answers: Record<string, number>
  readonly client_failures: Record<string, number>
  readonly baseline: NodeJS.MemoryUsage
  readonly loaded: NodeJS.MemoryUsage
  readonly heap_per_pending_bytes: number
  readonly rss_per_pending_bytes: number
  readonly external_per_pending_bytes: number
  readonly pending_after_abort: number | undefined
  readonly warmup_rps: number
}

type Msg = { type: 'started', port: number } | { type: 'memory', usage: NodeJS.MemoryUsage } | { type: 'stopped' } | { type: 'error', message: string }

async function expect<T extends Msg['type']> (g: Started, type: T, timeoutMs: number, what: string): Promise<Extract<Msg, { type: T }>> {
  const m = await nextMessage(g.child, (x): x is Msg => isType(x, type) || isType(x, 'error'), timeoutMs, what)
  if (m.type === 'error') throw new Error(`heap gateway: ${m.message}`)
  return m as Extract<Msg, { type: T }>
}

export async function runHeapPhase (o: HeapOptions): Promise<HeapResult> {
  const missing = missingGateway([gatewayFile('app.js'), gatewayFile('config.js')])
  if (missing !== undefined) throw new Error(missing)

  const g = forkNode(HEAP_GATEWAY_JS, [], join(o.logDir, 'heap-gateway.log'), { execArgv: ['--expose-gc'] })
  try {
    g.child.send({
      cmd: 'start',
      dir: gatewayDir(),
      env: {
        ...chatGatewayEnv({ mqttUrl: o.mqttUrl, prefix: o.prefix, chatMode: 'relay', databaseUrl: o.databaseUrl, dataDir: o.dataDir, authSecret: o.authSecret }, 0),
        LOG_LEVEL: 'silent',
        CHAT_TIMEOUT_MS: '120000'
      }
    })
    const { port } = await expect(g, 'started', o.readyTimeoutMs, 'heap gateway start')
    if (!await waitReady(port, o.readyTimeoutMs, () => g.child.exitCode === null)) {
      throw new Error(`heap gateway: GET /readyz not 200 within ${o.readyTimeoutMs} ms\n${g.tail()}`)
    }

    const sessionIds = syntheticSessionIds(o.sessions)
    // Warm-up against the echo worker so the chat path is compiled and its pools are grown.
    const warm = await runLoad({
      cmd: 'http',
      opts: { host: '127.0.0.1', port, concurrency: 64, warmupS: 0, measureS: o.warmupS, drainMs: 5000, sessionIds, expect: 'echo: hello', maxRequests: 1_000_000 },
      maxLifeMs: (o.warmupS + 10) * 1000
    }, o.logDir, {})
    await o.goSilent()
    const hasGauge = (await metric(port, PENDING_GAUGE)) !== undefined
    if (hasGauge) await waitUntil(async () => (await metric(port, PENDING_GAUGE)) === 0, 10_000)

    const baseline = (await expect(sendTo(g, { cmd: 'measure' }), 'memory', 30_000, 'baseline heap')).usage

    const hold = startHoldClient(o.logDir)
    let pending = 0
    let early: Record<string, number> = {}
    let failures: Record<string, number> = {}
    let sent = 0
    let loaded: NodeJS.MemoryUsage
    let pendingAfterAbort: number | undefined
    try {
      hold.child.send({ cmd: 'hold', opts: { host: '127.0.0.1', port, count: o.count, sessionIds, batch: 500 }, maxLifeMs: 180_000 })
      const held = await nextMessage(hold.child, (m): m is { type: 'held', sent: number } => isType(m, 'held'), 120_000, 'hold client')
      sent = held.sent
      if (hasGauge) {
        await waitUntil(async () => ((await metric(port, PENDING_GAUGE)) ?? 0) >= sent, 30_000, 200)
        pending = (await metric(port, PENDING_GAUGE)) ?? 0
      } else {
        await sleep(2000)
      }
      hold.child.send({ cmd: 'status' })
      const status = await nextMessage(hold.child, (m): m is { type: 'status', early: Record<string, number>, failures: Record<string, number> } => isType(m, 'status'), 10_000, 'hold client status')
      early = status.early
      failures = status.failures
      if (!hasGauge) pending = sent - sum(early) - sum(failures)

      loaded = (await expect(sendTo(g, { cmd: 'measure' }), 'memory', 30_000, 'loaded heap')).usage

      hold.child.send({ cmd: 'abort' })
      await nextMessage(hold.child, (m): m is { type: 'aborted' } => isType(m, 'aborted'), 10_000, 'hold client abort')
      if (hasGauge) {
        await waitUntil(async () => (await metric(port, PENDING_GAUGE)) === 0, 10_000, 200)
        pendingAfterAbort = await metric(port, PENDING_GAUGE)
      }
    } finally {
      await stop(hold.child, 3000)
    }

    g.child.send({ cmd: 'stop' })
    await expect(g, 'stopped', 20_000, 'heap gateway stop').catch(() => undefined)

    const per = (a: number, b: number): number => pending > 0 ? Math.round((a - b) / pending) : 0
    return {
      requested: o.count,
      sent,
      pending,
      pending_source: hasGauge ? 'gauge' : 'sent',
      early_answers: early,
      client_failures: failures,
      baseline,
      loaded,
      heap_per_pending_bytes: per(loaded.heapUsed, baseline.heapUsed),
      rss_per_pending_bytes: per(loaded.rss, baseline.rss),
      external_per_pending_bytes: per(loaded.external, baseline.external),
      pending_after_abort: pendingAfterAbort,
      warmup_rps: warm.rps
    }
  } catch (err) {
    throw new Error(`${(err as Error).message}\nheap gateway output:\n${g.tail(20)}`)
  } finally {
    await stop(g.child, 5000)
  }
}

function sendTo (g: Started, msg: unknown): Started { g.child.send(msg as object); return g }

function sum (r: Record<string, number>): number { return Object.values(r).reduce((a, b) => a + b, 0) }
