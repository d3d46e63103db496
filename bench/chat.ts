/**
 * bench:chat — throughput and latency of the chat path against the raw MQTT ceiling, with and
 * without authentication and persistence on a real PostgreSQL, and heap per pending request.
 * `npm run bench:chat`; method and goals in docs/benchmarks.md.
 *
 * Env (all optional): BENCH_SECONDS (8), BENCH_WARMUP_SECONDS (2), BENCH_CONCURRENCY ("1,64,256"),
 * BENCH_SESSIONS (256), BENCH_PHASES ("ceiling,relay,persistent,pg-ceiling,heap"; "gateway" =
 * relay and persistent), BENCH_HEAP_REQUESTS (10000), BENCH_READY_TIMEOUT_S (60), BENCH_MAX_SECONDS (600,
 * whole-run watchdog), BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/test: the server
 * and admin login a fresh database is created with), BENCH_DB_POOL_SIZE (unset: the gateway's
 * default; else DB_POOL_SIZE for both gateways and the PostgreSQL ceiling), ECHO_CHUNKS (0), MOSQUITTO_BIN (mosquitto),
 * BENCH_GATEWAY_DIR (dist/src: where main.js, app.js, config.js are), BENCH_GATEWAY_NODE_ARGS (extra node
 * flags for the measured gateways, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"), BENCH_STRICT=1 (exit 1
 * when a goal is missed).
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startMosquitto, type Broker } from './lib/mosquitto.js'
import { startWorker, type Worker } from './lib/worker.js'
import { GATEWAY_DIR, startGateway, scrapeText, samplesOf, parseMetrics, type ChatMode, type Gateway } from './lib/gateway.js'
import { createBenchDatabase, redact, DEFAULT_ADMIN_URL, type BenchDatabase } from './lib/database.js'
import { createBenchAccount, type BenchAccount } from './lib/accounts.js'
import { syntheticSessionIds } from './lib/http-load.js'
import { runLoad, type RunResult } from './lib/load-runner.js'
import { runHeapPhase } from './lib/heap-phase.js'
import { stopAll } from './lib/proc.js'
import type { ProcessGroup } from './lib/cpu.js'
import { machineInfo, markdown, goals, type Report, type Row } from './lib/report.js'

const PREFIX = 'llm'
/** Per load run; far above what 2 cores do in BENCH_SECONDS, it only bounds a runaway loop. */
const MAX_REQUESTS_PER_RUN = 5_000_000
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url))

interface Settings {
  readonly measureS: number
  readonly warmupS: number
  readonly concurrency: number[]
  readonly sessions: number
  readonly phases: Set<Phase>
  readonly heapRequests: number
  readonly readyTimeoutMs: number
  readonly maxSeconds: number
  readonly echoChunks: number
  readonly mosquittoBin: string
  readonly adminDatabaseUrl: string
  readonly dbPoolSize: number | undefined
  readonly gatewayNodeArgs: string[]
  readonly strict: boolean
}

type Phase = 'ceiling' | 'relay' | 'persistent' | 'pg-ceiling' | 'heap'
const PHASES: readonly Phase[] = ['ceiling', 'relay', 'persistent', 'pg-ceiling', 'heap']

function num (name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`bench: ${name} must be a number between ${min} and ${max}, got "${raw}"`)
    process.exit(78)
  }
  return n
}

function readSettings (): Settings {
  const concurrency = (process.env.BENCH_CONCURRENCY ?? '1,64,256').split(',').map((s) => Number(s.trim()))
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 4096)) {
    console.error(`bench: BENCH_CONCURRENCY must be a comma list of whole numbers 1..4096, got "${process.env.BENCH_CONCURRENCY}"`)
    process.exit(78)
  }
  const phases = new Set<Phase>()
  for (const p of (process.env.BENCH_PHASES ?? PHASES.join(',')).split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    if (p === 'gateway') { phases.add('relay'); phases.add('persistent'); continue }
    if (!(PHASES as readonly string[]).includes(p)) {
      console.error(`bench: BENCH_PHASES takes ${PHASES.join(', ')} (or gateway = relay,persistent); got "${p}"`)
      process.exit(78)
    }
    phases.add(p as Phase)
  }
  const adminDatabaseUrl = process.env.BENCH_DATABASE_URL ?? DEFAULT_ADMIN_URL
  if (!/^postgres(ql)?:\/\//.test(adminDatabaseUrl)) {
    console.error('bench: BENCH_DATABASE_URL must be a postgres:// URL of a server where the login may CREATE DATABASE')
    process.exit(78)
  }
  return {
    measureS: num('BENCH_SECONDS', 8, 0.5, 120),
    warmupS: num('BENCH_WARMUP_SECONDS', 2, 0, 60),
    concurrency,
    // Persistent mode makes every one of them through the API, so keep the count sane.
    sessions: num('BENCH_SESSIONS', 256, 1, 10_000),
    phases,
    heapRequests: num('BENCH_HEAP_REQUESTS', 10_000, 1, 50_000),
    readyTimeoutMs: num('BENCH_READY_TIMEOUT_S', 60, 1, 600) * 1000,
    maxSeconds: num('BENCH_MAX_SECONDS', 600, 10, 3600),
    echoChunks: num('ECHO_CHUNKS', 0, 0, 1000),
    mosquittoBin: process.env.MOSQUITTO_BIN ?? 'mosquitto',
    adminDatabaseUrl,
    gatewayNodeArgs: (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
    dbPoolSize: process.env.BENCH_DB_POOL_SIZE === undefined || process.env.BENCH_DB_POOL_SIZE === '' ? undefined : num('BENCH_DB_POOL_SIZE', 10, 1, 90),
    strict: process.env.BENCH_STRICT === '1'
  }
}

function commandLine (): string {
  const vars = Object.keys(process.env).filter((k) => k.startsWith('BENCH_') || k === 'ECHO_CHUNKS' || k === 'MOSQUITTO_BIN')
    .sort().map((k) => `${k}=${k === 'BENCH_DATABASE_URL' ? redact(process.env[k] ?? '') : process.env[k] ?? ''}`)
  return [...vars, 'npm run bench:chat'].join(' ')
}

function log (line: string): void { process.stderr.write(`${line}\n`) }

/** Run at the end, on a signal and by the watchdog: drops the bench database. */
let dropDatabase: (() => Promise<string | undefined>) | undefined

async function cleanUp (): Promise<void> {
  await stopAll()
  const problem = await dropDatabase?.()
  if (problem !== undefined) log(`bench: ${problem}`)
}

async function main (): Promise<number> {
  const s = readSettings()
  const tmp = mkdtempSync(join(tmpdir(), 'tether-bench-'))
  const failures: string[] = []
  let broker: Broker | undefined
  let worker: Worker | undefined
  let db: BenchDatabase | undefined
  const gateways: Partial<Record<ChatMode, Gateway>> = {}
  // Signs tokens; random per run so no token outlives it. 64 hex characters (config wants 32+).
  const authSecret = randomBytes(32).toString('hex')

  // Whole-run watchdog: whatever hangs, the run ends, its children are stopped, the database dropped.
  const watchdog = setTimeout(() => {
    log(`bench: still running after ${s.maxSeconds} s (BENCH_MAX_SECONDS); stopping everything`)
    void cleanUp().finally(() => process.exit(2))
  }, s.maxSeconds * 1000)
  watchdog.unref()

  try {
    broker = await startMosquitto(tmp, s.mosquittoBin)
    log(`bench: mosquitto ${broker.version} on ${broker.url} (logs in ${tmp})`)
    const report: Report = {
      command: commandLine(),
      started_at: new Date().toISOString(),
      machine: machineInfo(broker.version),
      settings: { warmup_s: s.warmupS, measure_s: s.measureS, concurrency: s.concurrency, sessions: s.sessions, db_pool_size: s.dbPoolSize ?? 'gateway default', echo_chunks: s.echoChunks, heap_requests: s.heapRequests, phases: [...s.phases], mosquitto_config: broker.config },
      rows: [],
      failures
    }
    log(`bench: load average ${report.machine.loadavg_1m_at_start} at start`)
    worker = await startWorker({ url: broker.url, prefix: PREFIX, silent: false, chunks: s.echoChunks, logFile: join(tmp, 'echo-worker.log') })

    const wantsGateway = s.phases.size > (s.phases.has('ceiling') ? 1 : 0)
    if (wantsGateway) {
      try {
        db = await createBenchDatabase(s.adminDatabaseUrl)
        dropDatabase = db.drop
        report.settings.postgres_version = db.serverVersion
        report.settings.postgres_settings = db.serverSettings
        report.settings.database = `${redact(db.url)} (created for this run, dropped at its end)`
        log(`bench: database ${db.name} created on ${redact(s.adminDatabaseUrl)} (PostgreSQL ${db.serverVersion})`)
      } catch (err) {
        failures.push(`database: ${(err as Error).message}`)
        log(`bench: gateway and heap phases skipped: ${(err as Error).message}`)
      }
    }

    // One after the other: both migrate the same database at start-up (under a lock, but the
    // second then finds nothing to do and starts faster). The PostgreSQL ceiling needs the
    // persistent gateway too: its user and sessions are made through the API.
    const needs = (mode: ChatMode): boolean => s.phases.has(mode) || (mode === 'persistent' && s.phases.has('pg-ceiling'))
    for (const mode of ['relay', 'persistent'] as const) {
      if (db === undefined || !needs(mode)) continue
      try {
        gateways[mode] = await startGateway({
          mqttUrl: broker.url, prefix: PREFIX, logFile: join(tmp, `gateway-${mode}.log`), readyTimeoutMs: s.readyTimeoutMs,
          chatMode: mode, databaseUrl: db.url, dataDir: join(tmp, `data-${mode}`), authSecret, dbPoolSize: s.dbPoolSize, nodeArgs: s.gatewayNodeArgs
        })
        log(`bench: gateway (${mode}) ready on 127.0.0.1:${gateways[mode]?.port}`)
      } catch (err) {
        failures.push(`${mode} gateway: ${(err as Error).message}`)
        log(`bench: ${mode} phase skipped: ${(err as Error).message}`)
      }
    }

    let account: BenchAccount | undefined
    if (gateways.persistent !== undefined) {
      try {
        const t0 = Date.now()
        account = await createBenchAccount(gateways.persistent.port, s.sessions)
        log(`bench: user ${account.username} with ${account.sessionIds.length} sessions made in ${Date.now() - t0} ms`)
      } catch (err) {
        failures.push(`persistent set-up (register, login, sessions): ${(err as Error).message}`)
        log(`bench: persistent and pg-ceiling phases skipped: ${(err as Error).message}`)
        await gateways.persistent.stop()
        delete gateways.persistent
      }
    }
    // Relay takes any well-formed id; it gets the same UUIDs when there are any, so both modes
    // send requests of the same size (persistent adds only its Authorization header).
    const sessionIds = account?.sessionIds ?? syntheticSessionIds(s.sessions)

    const backends: Record<string, ProcessGroup> = db === undefined ? {} : { postgres: db.backendPids }
    const pids = (gateway: Gateway | undefined): Record<string, number | undefined> =>
      ({ gateway: gateway?.proc.child.pid, broker: broker?.proc.child.pid, worker: worker?.proc.child.pid })
    const life = (s.warmupS + s.measureS) * 1000 + 20_000
    const httpRun = async (mode: ChatMode, c: number): Promise<RunResult | undefined> => {
      const g = gateways[mode]
      if (g === undefined || !s.phases.has(mode)) return undefined
      try {
        const r = await runLoad({
          cmd: 'http',
          opts: {
            host: '127.0.0.1', port: g.port, concurrency: c, warmupS: s.warmupS, measureS: s.measureS, drainMs: 5000,
            sessionIds, token: mode === 'persistent' ? account?.token : undefined, expect: 'echo: hello', maxRequests: MAX_REQUESTS_PER_RUN
          },
          maxLifeMs: life
        }, tmp, pids(g), backends)
        log(`bench: ${mode} c=${c}: ${r.rps} req/s p50 ${r.latency.p50_ms} ms p99 ${r.latency.p99_ms} ms statuses ${JSON.stringify(r.statuses)} errors ${JSON.stringify(r.errors)} cpu ${JSON.stringify(r.cpu_percent)}`)
        return r
      } catch (err) {
        failures.push(`${mode} c=${c}: ${(err as Error).message}`)
        return undefined
      }
    }

    for (const c of s.concurrency) {
      let ceiling: RunResult | undefined
      if (s.phases.has('ceiling')) {
        try {
          ceiling = await runLoad({ cmd: 'mqtt', opts: { url: broker.url, prefix: PREFIX, concurrency: c, warmupS: s.warmupS, measureS: s.measureS, drainMs: 5000, sessions: s.sessions, maxRequests: MAX_REQUESTS_PER_RUN }, maxLifeMs: life }, tmp, pids(undefined))
          log(`bench: ceiling c=${c}: ${ceiling.rps} req/s p50 ${ceiling.latency.p50_ms} ms p99 ${ceiling.latency.p99_ms} ms`)
        } catch (err) {
          failures.push(`ceiling c=${c}: ${(err as Error).message}`)
        }
      }
      // Relay straight before persistent at the same concurrency, so the ratio compares runs
      // seconds apart on the same machine state.
      const relay = await httpRun('relay', c)
      const persistent = await httpRun('persistent', c)
      let pg: RunResult | undefined
      if (s.phases.has('pg-ceiling') && db !== undefined && account !== undefined) {
        try {
          pg = await runLoad({
            cmd: 'pg',
            opts: { gatewayDir: GATEWAY_DIR, databaseUrl: db.url, dbPoolSize: s.dbPoolSize, userId: account.userId, sessionIds, concurrency: c, warmupS: s.warmupS, measureS: s.measureS, drainMs: 5000, maxRequests: MAX_REQUESTS_PER_RUN },
            maxLifeMs: life
          }, tmp, {}, backends)
          log(`bench: pg-ceiling c=${c}: ${pg.rps} chats/s p50 ${pg.latency.p50_ms} ms p99 ${pg.latency.p99_ms} ms errors ${JSON.stringify(pg.errors)} cpu ${JSON.stringify(pg.cpu_percent)}`)
        } catch (err) {
          failures.push(`pg-ceiling c=${c}: ${(err as Error).message}`)
        }
      }
      const row: Row = { concurrency: c, ceiling, relay, persistent, pg }
      report.rows.push(row)
    }

    for (const mode of ['relay', 'persistent'] as const) {
      const g = gateways[mode]
      if (g === undefined) continue
      try {
        const text = await scrapeText(g.port)
        const m = parseMetrics(text)
        const waitS = m.get('tether_db_pool_acquire_duration_seconds_sum')
        const acquired = m.get('tether_db_pool_acquire_duration_seconds_count')
        report.settings[`${mode}_gateway_after_load`] = {
          nodejs_heap_size_used_bytes: m.get('nodejs_heap_size_used_bytes'),
          process_resident_memory_bytes: m.get('process_resident_memory_bytes'),
          // Mean wait for a pool connection over the whole run: how saturated the pool was.
          db_pool_mean_acquire_ms: waitS !== undefined && acquired !== undefined && acquired > 0 ? Math.round((waitS / acquired) * 1e5) / 100 : undefined,
          tether_db: samplesOf(text, 'tether_db_')
        }
      } catch (err) {
        failures.push(`${mode} gateway /metrics: ${(err as Error).message}`)
      }
      await g.stop()
      delete gateways[mode]
    }
    if (db !== undefined && account !== undefined) {
      // Evidence that the persistent runs stored what they answered: two rows per 200.
      report.settings.chat_messages_stored = await db.countMessages().catch((err: unknown) => `count failed: ${(err as Error).message}`)
    }

    if (s.phases.has('heap') && db !== undefined) {
      try {
        const w = worker
        report.heap = await runHeapPhase({
          mqttUrl: broker.url,
          prefix: PREFIX,
          logDir: tmp,
          count: heapCount(s.heapRequests, report.machine.ulimit_nofile),
          sessions: s.sessions,
          databaseUrl: db.url,
          dataDir: join(tmp, 'data-heap'),
          authSecret,
          warmupS: Math.max(2, s.warmupS),
          readyTimeoutMs: s.readyTimeoutMs,
          goSilent: async () => {
            await w.stop()
            worker = await startWorker({ url: broker?.url ?? '', prefix: PREFIX, silent: true, chunks: 0, logFile: join(tmp, 'silent-worker.log') })
          }
        })
        log(`bench: heap per pending request ${report.heap.heap_per_pending_bytes} B (${report.heap.pending} pending)`)
      } catch (err) {
        failures.push(`heap phase: ${(err as Error).message}`)
      }
    }

    // With the start value, tells whether someone else shared the cores during the run.
    report.settings.loadavg_1m_at_end = Math.round((loadavg()[0] ?? 0) * 100) / 100
    const md = markdown(report)
    console.log(md)
    mkdirSync(RESULTS_DIR, { recursive: true })
    const file = join(RESULTS_DIR, `chat-${report.started_at.replace(/[:.]/g, '-')}.json`)
    writeFileSync(file, JSON.stringify({ ...report, goals: goals(report) }, null, 2) + '\n')
    log(`bench: results written to ${file}`)
    for (const f of failures) log(`bench: FAILED ${f}`)
    const missed = goals(report).filter((g) => g.pass === false).length
    if (failures.length > 0) return 1
    return s.strict && missed > 0 ? 1 : 0
  } finally {
    for (const g of Object.values(gateways)) await g.stop()
    await worker?.stop()
    await broker?.stop()
    await cleanUp()
    clearTimeout(watchdog)
    if (failures.length === 0) rmSync(tmp, { recursive: true, force: true })
    else log(`bench: logs kept in ${tmp}`)
  }
}

/**
 * 10,000 held connections cost one descriptor each in the client and in the gateway (separate
 * processes); stay well under the limit rather than raise it.
 */
function heapCount (wanted: number, nofile: number | undefined): number {
  if (nofile === undefined || nofile >= wanted + 500) return wanted
  const n = Math.max(100, nofile - 500)
  log(`bench: ulimit -n is ${nofile}; holding ${n} requests instead of ${wanted}`)
  return n
}

process.on('SIGINT', () => { void cleanUp().finally(() => process.exit(130)) })
process.on('SIGTERM', () => { void cleanUp().finally(() => process.exit(143)) })

main().then((code) => { process.exitCode = code }, async (err: unknown) => {
  log(`bench: ${(err as Error).message}`)
  await cleanUp()
  process.exitCode = 1
})
