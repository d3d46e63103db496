/**
 * One mode of bench:loop: a fresh gateway (THREAD_INLINE off or on) on the run's database, the
 * load and the health prober in child processes (bench/loop-client.ts), and what is read off the
 * gateway at both ends of the measured window (lag, the per-second delay histogram, CPU).
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { LoopClientResult, LoopCommand, WindowSpec } from '../loop-client.js'
import { cpuPercent, groupCpuPercent, sampleCpu, sampleGroup, type CpuSample, type GroupSample } from '../lib/cpu.js'
import type { BenchDatabase } from '../lib/database.js'
import { TOPIC_PREFIX, type Gateway } from '../lib/gateway.js'
import { isType } from '../lib/ipc.js'
import { loadAverage1m } from '../lib/machine-info.js'
import { getText, parseMetrics } from '../lib/metrics.js'
import type { Broker } from '../lib/mosquitto.js'
import { forkNode, isRunning, nextMessage, sleep, stop, type Started } from '../lib/proc.js'
import { log } from '../lib/run.js'
import type { Worker } from '../lib/worker.js'
import { startLoopGateway, type LoopMode } from './gateway.js'
import { histogramDelta, parseHistogram, summarizeDelay, type Histogram, type ModeResult } from './report.js'
import type { LoopUser } from './seed.js'

const LOOP_CLIENT_JS = fileURLToPath(new URL('../loop-client.js', import.meta.url))

/**
 * /api/health's lag p99 covers a 30 s window that restarts at the first read after it has run
 * 30 s (src/event-loop-lag.ts). The window starts with the lag monitor, just before /readyz
 * first answers 200, and the prober reads health every few ms, so it restarts within
 * milliseconds of readyAt + 30 s; measuring from readyAt + 31 s for at most 25 s makes the p99
 * read at the end cover the measured window (and about the second before it), nothing older.
 */
const LAG_WINDOW_MS = 30_000
export const WINDOW_OFFSET_MS = LAG_WINDOW_MS + 1000
export const MAX_WINDOW_S = 25
/** How long before the window's end the CPU of the processes is read (see runMode). */
const CPU_EARLY_MS = 200

/** What a mode needs from the run's settings (bench/loop.ts reads them from the environment). */
export interface ModeSettings {
  readonly measureS: number
  readonly loginRate: number
  readonly chatRate: number
  readonly probeMs: number
  readonly historyMessages: number
  readonly historyMaxTokens: number
  readonly threads: number | undefined
  readonly threadMaxQueue: number | undefined
  readonly threadTaskTimeoutMs: number | undefined
  readonly threadNice: number | undefined
  readonly loginMaxOutstanding: number
  readonly chatMaxOutstanding: number
  readonly requestTimeoutMs: number
  readonly readyTimeoutMs: number
  readonly gatewayNodeArgs: string[]
  readonly passwordHashCost: string
}

/** Generous: in inline mode the gateway answers after the work queued in front of the request. */
const GET_TIMEOUT_MS = 30_000

/** CPU seconds of single processes by role and of the database's backends. */
interface CpuSnapshot { readonly at: number, readonly single: CpuSample, readonly postgres: GroupSample }

async function snapshotCpu (pids: Record<string, number | undefined>, db: BenchDatabase): Promise<CpuSnapshot> {
  const single = sampleCpu(pids)
  const postgres = await sampleGroup(db.backendPids).catch(() => new Map<number, number>())
  return { at: Date.now(), single, postgres }
}

/** Percent of one core per role; postgres summed over the backends seen at both ends. */
function cpuBetween (a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const wallS = (b.at - a.at) / 1000
  const out = cpuPercent(a.single, b.single, wallS)
  const pg = groupCpuPercent(a.postgres, b.postgres, wallS, 'skip')
  if (pg !== undefined) out.postgres = pg
  return out
}

function isResult (m: unknown): m is LoopClientResult | { type: 'error', message: string } {
  return isType(m, 'result') || isType(m, 'error')
}

async function clientResult (c: Started, maxWaitMs: number, what: string): Promise<LoopClientResult> {
  const msg = await nextMessage(c.child, isResult, maxWaitMs, what)
  if (msg.type === 'error') throw new Error(`${what}: ${(msg as { message: string }).message}`)
  return msg as LoopClientResult
}

export interface ModeContext {
  readonly s: ModeSettings
  readonly tmp: string
  readonly broker: Broker
  readonly worker: Worker
  readonly db: BenchDatabase
  readonly authSecret: string
  readonly users: LoopUser[]
  readonly contents: string[]
}

export async function runMode (mode: LoopMode, ctx: ModeContext, gateways: Set<Gateway>): Promise<ModeResult> {
  const { s, tmp, db } = ctx
  const failures: string[] = []
  const gateway = await startLoopGateway({
    mode, mqttUrl: ctx.broker.url, prefix: TOPIC_PREFIX, databaseUrl: db.url, dataDir: join(tmp, `data-${mode}`), authSecret: ctx.authSecret,
    logFile: join(tmp, `gateway-${mode}.log`), readyTimeoutMs: s.readyTimeoutMs,
    historyMaxMessages: s.historyMessages, historyMaxTokens: s.historyMaxTokens, passwordHashCost: s.passwordHashCost,
    threads: s.threads, threadMaxQueue: s.threadMaxQueue, threadTaskTimeoutMs: s.threadTaskTimeoutMs, threadNice: s.threadNice,
    nodeArgs: s.gatewayNodeArgs
  })
  gateways.add(gateway)
  try {
    log(`bench: gateway (${mode}) ready on 127.0.0.1:${gateway.port}`)
    const window: WindowSpec = { startEpochMs: gateway.readyAt + WINDOW_OFFSET_MS, lengthMs: s.measureS * 1000 }
    const windowEnd = window.startEpochMs + window.lengthMs
    // Each child lives for the warm-up, the window and the drain of its last requests.
    const maxLifeMs = windowEnd - Date.now() + s.requestTimeoutMs + 15_000
    const chats = Array.from({ length: ctx.users.length * 4 }, (_, j) => {
      const u = ctx.users[j % ctx.users.length] as LoopUser
      return { sessionId: u.sessionId, token: u.token }
    })
    const loadCmd: LoopCommand = {
      cmd: 'load',
      maxLifeMs,
      opts: {
        host: '127.0.0.1', port: gateway.port, window,
        loginRatePerS: s.loginRate, chatRatePerS: s.chatRate,
        logins: ctx.users.map((u) => ({ username: u.username, password: u.password })),
        chats, contents: ctx.contents,
        loginMaxOutstanding: s.loginMaxOutstanding, chatMaxOutstanding: s.chatMaxOutstanding, timeoutMs: s.requestTimeoutMs
      }
    }
    const probeCmd: LoopCommand = {
      cmd: 'probe',
      maxLifeMs,
      // Probes never give up on a slow answer before the load's own requests would.
      opts: { host: '127.0.0.1', port: gateway.port, window, everyMs: s.probeMs, maxOutstanding: 2000, timeoutMs: s.requestTimeoutMs }
    }
    const prober = forkNode(LOOP_CLIENT_JS, [], join(tmp, `probe-${mode}.log`))
    const loader = forkNode(LOOP_CLIENT_JS, [], join(tmp, `load-${mode}.log`))
    prober.child.send(probeCmd)
    loader.child.send(loadCmd)
    const results = Promise.allSettled([clientResult(loader, maxLifeMs + 5000, `load client (${mode})`), clientResult(prober, maxLifeMs + 5000, `health prober (${mode})`)])
    log(`bench: ${mode}: warming up for ${Math.round((window.startEpochMs - Date.now()) / 1000)} s, then measuring ${s.measureS} s`)

    const pids = { gateway: gateway.proc.child.pid, broker: ctx.broker.proc.child.pid, worker: ctx.worker.proc.child.pid, load: loader.child.pid, probe: prober.child.pid }
    await sleep(Math.max(0, window.startEpochMs - Date.now()))
    const loadBefore = loadAverage1m()
    const cpuBefore = await snapshotCpu(pids, db)
    let delayBefore: Histogram | undefined
    let stallsBefore: number | undefined
    try {
      const text = await getText(gateway.port, '/metrics', GET_TIMEOUT_MS)
      delayBefore = parseHistogram(text, 'tether_event_loop_delay_seconds')
      stallsBefore = parseMetrics(text).get('tether_watchdog_stalls_total')
    } catch (err) {
      failures.push(`/metrics at the window's start: ${(err as Error).message}`)
    }

    // CPU a little before the end: a load process whose requests have all been answered exits
    // the moment the window closes, and /proc no longer has it.
    await sleep(Math.max(0, windowEnd - CPU_EARLY_MS - Date.now()))
    const cpuAfter = await snapshotCpu(pids, db)
    await sleep(Math.max(0, windowEnd - Date.now()))
    const loadAfter = loadAverage1m()
    const lag: { -readonly [K in keyof ModeResult['lag']]: ModeResult['lag'][K] } = {}
    let watchdogStalls: number | undefined
    let rssMb: number | undefined
    try {
      const health = JSON.parse(await getText(gateway.port, '/api/health', GET_TIMEOUT_MS)) as { event_loop?: { lag_p99_ms?: number } }
      lag.health_p99_ms = health.event_loop?.lag_p99_ms
    } catch (err) {
      failures.push(`/api/health at the window's end: ${(err as Error).message}`)
    }
    try {
      const text = await getText(gateway.port, '/metrics', GET_TIMEOUT_MS)
      const m = parseMetrics(text)
      const p99 = m.get('tether_event_loop_lag_p99_seconds')
      if (p99 !== undefined) lag.metrics_p99_ms = Math.round(p99 * 1e5) / 100
      if (delayBefore !== undefined) lag.per_second_max = summarizeDelay(histogramDelta(delayBefore, parseHistogram(text, 'tether_event_loop_delay_seconds')))
      const stalls = m.get('tether_watchdog_stalls_total')
      if (stalls !== undefined) watchdogStalls = stalls - (stallsBefore ?? 0)
      const rss = m.get('process_resident_memory_bytes')
      if (rss !== undefined) rssMb = Math.round(rss / 2 ** 20)
    } catch (err) {
      failures.push(`/metrics at the window's end: ${(err as Error).message}`)
    }

    const [loadResult, probeResult] = await results
    const streams = loadResult.status === 'fulfilled' ? loadResult.value.streams : []
    if (loadResult.status === 'rejected') failures.push(String((loadResult.reason as Error).message))
    if (probeResult.status === 'rejected') failures.push(String((probeResult.reason as Error).message))
    const probe = probeResult.status === 'fulfilled' ? probeResult.value : undefined
    lag.prober_last_ms = probe?.lag?.last_ms
    lag.prober_max_ms = probe?.lag?.max_ms
    const cpu = cpuBetween(cpuBefore, cpuAfter)
    const g = gateway.proc.child
    if (!isRunning(g)) failures.push(`the gateway exited during the run (code ${g.exitCode}, signal ${g.signalCode}); its output:\n${gateway.proc.tail(30)}`)
    await stop(loader.child, 2000)
    await stop(prober.child, 2000)
    const result: ModeResult = {
      mode,
      window_started_at: new Date(window.startEpochMs).toISOString(),
      window_s: s.measureS,
      loadavg_1m_before: loadBefore,
      loadavg_1m_after: loadAfter,
      login: streams.find((x) => x.name === 'login'),
      chat: streams.find((x) => x.name === 'chat'),
      health: probe?.streams[0],
      lag,
      cpu_percent: cpu,
      ...(watchdogStalls !== undefined ? { watchdog_stalls: watchdogStalls } : {}),
      ...(rssMb !== undefined ? { gateway_rss_mb: rssMb } : {}),
      failures
    }
    log(`bench: ${mode}: logins ${result.login?.achieved_per_s}/s p99 ${result.login?.latency.p99_ms} ms ${JSON.stringify(result.login?.statuses)}; ` +
      `chats ${result.chat?.achieved_per_s}/s p99 ${result.chat?.latency.p99_ms} ms ${JSON.stringify(result.chat?.statuses)}; ` +
      `health p99 ${result.health?.latency.p99_ms} ms max ${result.health?.latency.max_ms} ms; lag p99 ${lag.health_p99_ms} ms; cpu ${JSON.stringify(cpu)}`)
    return result
  } finally {
    // In inline mode the gateway may still be working through the requests it accepted;
    // SIGTERM, then SIGKILL after 15 s (bench/lib/proc.ts).
    await gateway.stop()
    gateways.delete(gateway)
  }
}
