/**
 * bench:chat — throughput and latency of the chat path against the raw MQTT ceiling, with and
 * without authentication and persistence on a real PostgreSQL, and heap per pending request.
 * `npm run bench:chat`; method and goals in docs/benchmarks.md.
 *
 * Settings: the variables read in bench/chat/settings.ts, each with its default and meaning
 * in docs/benchmarks.md ("bench:chat").
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createAccount, type Account } from './lib/accounts.js'
import type { ProcessGroup } from './lib/cpu.js'
import { createBenchDatabase, redact, type BenchDatabase } from './lib/database.js'
import { gatewayDir, TOPIC_PREFIX, type Gateway } from './lib/gateway.js'
import { loadAverage1m, machineInfo } from './lib/machine-info.js'
import { parseMetrics, samplesOf, scrapeText } from './lib/metrics.js'
import { startMosquitto, type Broker } from './lib/mosquitto.js'
import { exitCode, writeResults } from './lib/results.js'
import { createRun, log } from './lib/run.js'
import { commandLine } from './lib/settings.js'
import { startWorker, type Worker } from './lib/worker.js'
import { startChatGateway, type ChatMode } from './chat/gateway.js'
import { runHeapPhase } from './chat/heap-phase.js'
import { syntheticSessionIds } from './chat/http-load.js'
import { runLoad, type RunResult } from './chat/load-runner.js'
import { goals, markdown, type Report, type Row } from './chat/report.js'
import { batchHistogram, batchesBetween } from './chat/write-batches.js'
import { readSettings } from './chat/settings.js'

/** Per load run; far above what 2 cores do in BENCH_SECONDS, it only bounds a runaway loop. */
const MAX_REQUESTS_PER_RUN = 5_000_000

const run = createRun('bench')

async function main (): Promise<number> {
  const s = readSettings()
  // Whole-run watchdog: whatever hangs, the run ends, its children are stopped, the database dropped.
  run.arm(s.maxSeconds)
  const tmp = mkdtempSync(join(tmpdir(), 'tether-bench-'))
  const failures: string[] = []
  let broker: Broker | undefined
  let worker: Worker | undefined
  let db: BenchDatabase | undefined
  const gateways: Partial<Record<ChatMode, Gateway>> = {}
  // Signs tokens; random per run so no token outlives it. 64 hex characters (config wants 32+).
  const authSecret = randomBytes(32).toString('hex')

  try {
    broker = await startMosquitto(tmp, s.mosquittoBin)
    log(`bench: mosquitto ${broker.version} on ${broker.url} (logs in ${tmp})`)
    const report: Report = {
      command: commandLine('bench:chat', ['ECHO_CHUNKS', 'MOSQUITTO_BIN', 'BENCH_WORKER_ANNOUNCE', 'BENCH_MQTT_PROTOCOL']),
      started_at: new Date().toISOString(),
      machine: machineInfo(broker.version),
      settings: { warmup_s: s.warmupS, measure_s: s.measureS, concurrency: s.concurrency, sessions: s.sessions, db_pool_size: s.dbPoolSize ?? 'gateway default', echo_chunks: s.echoChunks, worker_announce: s.workerAnnounce, mqtt_protocol: s.mqttProtocol, heap_requests: s.heapRequests, phases: [...s.phases], mosquitto_config: broker.config },
      rows: [],
      failures
    }
    log(`bench: load average ${report.machine.loadavg_1m_at_start} at start`)
    worker = await startWorker({ url: broker.url, prefix: TOPIC_PREFIX, silent: false, chunks: s.echoChunks, logFile: join(tmp, 'echo-worker.log'), ...(s.workerAnnounce ? { announceAs: 'bench-echo' } : {}) })

    const wantsGateway = s.phases.size > (s.phases.has('ceiling') ? 1 : 0)
    if (wantsGateway) {
      try {
        db = await createBenchDatabase({ adminUrl: s.adminDatabaseUrl, namePrefix: 'tether_bench_', applicationName: 'tether-bench' })
        run.defer(db.drop)
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
        gateways[mode] = await startChatGateway({
          mqttUrl: broker.url, prefix: TOPIC_PREFIX, logFile: join(tmp, `gateway-${mode}.log`), readyTimeoutMs: s.readyTimeoutMs,
          chatMode: mode, databaseUrl: db.url, dataDir: join(tmp, `data-${mode}`), authSecret, dbPoolSize: s.dbPoolSize, mqttProtocol: s.mqttProtocol, nodeArgs: s.gatewayNodeArgs
        })
        log(`bench: gateway (${mode}) ready on 127.0.0.1:${gateways[mode]?.port}`)
      } catch (err) {
        failures.push(`${mode} gateway: ${(err as Error).message}`)
        log(`bench: ${mode} phase skipped: ${(err as Error).message}`)
      }
    }

    let account: Account | undefined
    if (gateways.persistent !== undefined) {
      try {
        const t0 = Date.now()
        account = await createAccount(gateways.persistent.port, { username: `bench_${randomBytes(4).toString('hex')}`, sessions: s.sessions, sessionTitle: (i) => `bench ${i}` })
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
          ceiling = await runLoad({ cmd: 'mqtt', opts: { url: broker.url, prefix: TOPIC_PREFIX, concurrency: c, warmupS: s.warmupS, measureS: s.measureS, drainMs: 5000, sessions: s.sessions, maxRequests: MAX_REQUESTS_PER_RUN }, maxLifeMs: life }, tmp, pids(undefined))
          log(`bench: ceiling c=${c}: ${ceiling.rps} req/s p50 ${ceiling.latency.p50_ms} ms p99 ${ceiling.latency.p99_ms} ms`)
        } catch (err) {
          failures.push(`ceiling c=${c}: ${(err as Error).message}`)
        }
      }
      // Relay straight before persistent at the same concurrency, so the ratio compares runs
      // seconds apart on the same machine state.
      const relay = await httpRun('relay', c)
      const batchesBefore = gateways.persistent === undefined ? undefined : await batchHistogram(gateways.persistent.port)
      const persistent = await httpRun('persistent', c)
      const batches = gateways.persistent === undefined ? undefined : batchesBetween(batchesBefore, await batchHistogram(gateways.persistent.port))
      let pg: RunResult | undefined
      if (s.phases.has('pg-ceiling') && db !== undefined && account !== undefined) {
        try {
          pg = await runLoad({
            cmd: 'pg',
            opts: { gatewayDir: gatewayDir(), databaseUrl: db.url, dbPoolSize: s.dbPoolSize, userId: account.userId, sessionIds, concurrency: c, warmupS: s.warmupS, measureS: s.measureS, drainMs: 5000, maxRequests: MAX_REQUESTS_PER_RUN },
            maxLifeMs: life
          }, tmp, {}, backends)
          log(`bench: pg-ceiling c=${c}: ${pg.rps} chats/s p50 ${pg.latency.p50_ms} ms p99 ${pg.latency.p99_ms} ms errors ${JSON.stringify(pg.errors)} cpu ${JSON.stringify(pg.cpu_percent)}`)
        } catch (err) {
          failures.push(`pg-ceiling c=${c}: ${(err as Error).message}`)
        }
      }
      const row: Row = { concurrency: c, ceiling, relay, persistent, pg, ...(batches !== undefined ? { batches } : {}) }
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
          prefix: TOPIC_PREFIX,
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
            worker = await startWorker({ url: broker?.url ?? '', prefix: TOPIC_PREFIX, silent: true, chunks: 0, logFile: join(tmp, 'silent-worker.log') })
          }
        })
        log(`bench: heap per pending request ${report.heap.heap_per_pending_bytes} B (${report.heap.pending} pending)`)
      } catch (err) {
        failures.push(`heap phase: ${(err as Error).message}`)
      }
    }

    // With the start value, tells whether someone else shared the cores during the run.
    report.settings.loadavg_1m_at_end = loadAverage1m()
    console.log(markdown(report))
    const file = writeResults('chat', report.started_at, { ...report, goals: goals(report) })
    log(`bench: results written to ${file}`)
    for (const f of failures) log(`bench: FAILED ${f}`)
    return exitCode(failures.length > 0, goals(report), s.strict)
  } finally {
    for (const g of Object.values(gateways)) await g.stop()
    await worker?.stop()
    await broker?.stop()
    await run.cleanUp()
    run.disarm()
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

run.exitWith(main, { exitAtOnce: false })
