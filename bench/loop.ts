/**
 * bench:loop — does the event loop stay responsive under a storm of logins (scrypt) and chats
 * with long histories (token counting)? The same load runs twice: with that work on the worker
 * pool, then with WORKER_INLINE=1, which runs it on the event loop, to show what the pool
 * prevents. `npm run bench:loop`; method and goals in docs/benchmarks.md ("bench:loop").
 *
 * Env (all optional): BENCH_SECONDS (15, the measured window of each mode; at most 25),
 * BENCH_LOGIN_RATE (200/s), BENCH_CHAT_RATE (50/s), BENCH_PROBE_MS (20), BENCH_USERS (50),
 * BENCH_HISTORY_MESSAGES (40: seeded per session, and HISTORY_MAX_MESSAGES),
 * BENCH_MESSAGE_CHARS (4000: each seeded message), BENCH_CHAT_CHARS (3000: each chat message),
 * BENCH_HISTORY_MAX_TOKENS (16000), BENCH_WORKER_THREADS / BENCH_WORKER_MAX_QUEUE /
 * BENCH_WORKER_TASK_TIMEOUT_MS / BENCH_WORKER_NICE (unset: the gateway's defaults), BENCH_LOGIN_MAX_OUTSTANDING (600),
 * BENCH_CHAT_MAX_OUTSTANDING (200), BENCH_REQUEST_TIMEOUT_MS (30000), BENCH_MODES ("pool,inline"),
 * BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/test), BENCH_READY_TIMEOUT_S (60),
 * BENCH_MAX_SECONDS (600, whole-run watchdog), MOSQUITTO_BIN (mosquitto), BENCH_STRICT=1 (exit 1
 * when a goal is missed), BENCH_KEEP_LOGS=1 (keep the children's logs even when all went well),
 * BENCH_GATEWAY_NODE_ARGS (extra node flags for the measured gateways, e.g. "--cpu-prof").
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLoopDatabase, DEFAULT_ADMIN_URL, redact } from './lib/loop-database.js'
import { startLoopGateway, type LoopGateway, type LoopMode } from './lib/loop-gateway.js'
import { MAX_WINDOW_S, PREFIX, runMode, WINDOW_OFFSET_MS, type ModeContext, type ModeSettings } from './lib/loop-mode.js'
import { goals, markdown, type LoopReport } from './lib/loop-report.js'
import { prng, prose, seedUsers } from './lib/loop-seed.js'
import { startMosquitto, type Broker } from './lib/mosquitto.js'
import { stopAll } from './lib/proc.js'
import { machineInfo } from './lib/report.js'
import { startWorker, type Worker } from './lib/worker.js'

const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url))

interface Settings extends ModeSettings {
  readonly users: number
  readonly messageChars: number
  readonly chatChars: number
  readonly modes: LoopMode[]
  readonly adminDatabaseUrl: string
  readonly maxSeconds: number
  readonly mosquittoBin: string
  readonly strict: boolean
  readonly keepLogs: boolean
}

function fail (message: string): never {
  console.error(`bench: ${message}`)
  process.exit(78)
}

function num (name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min || n > max) fail(`${name} must be a number between ${min} and ${max}, got "${raw}"`)
  return n
}

function optionalInt (name: string, min: number, max: number): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  const n = num(name, 0, min, max)
  if (!Number.isInteger(n)) fail(`${name} must be a whole number, got "${raw}"`)
  return n
}

function readSettings (): Settings {
  const modes = (process.env.BENCH_MODES ?? 'pool,inline').split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (modes.length === 0 || modes.some((m) => m !== 'pool' && m !== 'inline')) fail(`BENCH_MODES takes pool and/or inline, got "${process.env.BENCH_MODES}"`)
  const adminDatabaseUrl = process.env.BENCH_DATABASE_URL ?? DEFAULT_ADMIN_URL
  if (!/^postgres(ql)?:\/\//.test(adminDatabaseUrl)) fail('BENCH_DATABASE_URL must be a postgres:// URL of a server where the login may CREATE DATABASE')
  return {
    measureS: num('BENCH_SECONDS', 15, 1, MAX_WINDOW_S),
    loginRate: num('BENCH_LOGIN_RATE', 200, 1, 5000),
    chatRate: num('BENCH_CHAT_RATE', 50, 1, 5000),
    probeMs: num('BENCH_PROBE_MS', 20, 1, 1000),
    users: num('BENCH_USERS', 50, 1, 1000),
    historyMessages: num('BENCH_HISTORY_MESSAGES', 40, 1, 1000),
    messageChars: num('BENCH_MESSAGE_CHARS', 4000, 1, 100_000),
    // MAX_BODY_BYTES is 64 KiB by default; JSON and headers need a little room.
    chatChars: num('BENCH_CHAT_CHARS', 3000, 1, 60_000),
    historyMaxTokens: num('BENCH_HISTORY_MAX_TOKENS', 16_000, 0, 10_000_000),
    workerThreads: optionalInt('BENCH_WORKER_THREADS', 1, 256),
    workerMaxQueue: optionalInt('BENCH_WORKER_MAX_QUEUE', 1, 1_000_000),
    workerTaskTimeoutMs: optionalInt('BENCH_WORKER_TASK_TIMEOUT_MS', 10, 600_000),
    workerNice: optionalInt('BENCH_WORKER_NICE', 0, 19),
    loginMaxOutstanding: num('BENCH_LOGIN_MAX_OUTSTANDING', 600, 1, 10_000),
    chatMaxOutstanding: num('BENCH_CHAT_MAX_OUTSTANDING', 200, 1, 10_000),
    requestTimeoutMs: num('BENCH_REQUEST_TIMEOUT_MS', 30_000, 100, 120_000),
    modes: modes as LoopMode[],
    adminDatabaseUrl,
    readyTimeoutMs: num('BENCH_READY_TIMEOUT_S', 60, 1, 600) * 1000,
    maxSeconds: num('BENCH_MAX_SECONDS', 600, 60, 3600),
    mosquittoBin: process.env.MOSQUITTO_BIN ?? 'mosquitto',
    strict: process.env.BENCH_STRICT === '1',
    keepLogs: process.env.BENCH_KEEP_LOGS === '1',
    gatewayNodeArgs: (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
  }
}

function commandLine (): string {
  const vars = Object.keys(process.env).filter((k) => k.startsWith('BENCH_') || k === 'MOSQUITTO_BIN')
    .sort().map((k) => `${k}=${k === 'BENCH_DATABASE_URL' ? redact(process.env[k] ?? '') : process.env[k] ?? ''}`)
  return [...vars, 'npm run bench:loop'].join(' ')
}

function log (line: string): void { process.stderr.write(`${line}\n`) }

/** Run at the end, on a signal and by the watchdog: stops every child, drops the database. */
let dropDatabase: (() => Promise<string | undefined>) | undefined

async function cleanUp (): Promise<void> {
  await stopAll()
  const problem = await dropDatabase?.()
  if (problem !== undefined) log(`bench: ${problem}`)
}

async function main (): Promise<number> {
  const s = readSettings()
  const tmp = mkdtempSync(join(tmpdir(), 'tether-loop-'))
  const failures: string[] = []
  const gateways = new Set<LoopGateway>()
  let broker: Broker | undefined
  let worker: Worker | undefined
  let modeFailed = false
  // Signs tokens for both gateways (so the set-up's tokens stay valid); random per run.
  const authSecret = randomBytes(32).toString('hex')

  const watchdog = setTimeout(() => {
    log(`bench: still running after ${s.maxSeconds} s (BENCH_MAX_SECONDS); stopping everything`)
    void cleanUp().finally(() => process.exit(2))
  }, s.maxSeconds * 1000)
  watchdog.unref()

  try {
    broker = await startMosquitto(tmp, s.mosquittoBin)
    const machine = machineInfo(broker.version)
    log(`bench: mosquitto ${broker.version} on ${broker.url}; load average ${machine.loadavg_1m_at_start} at start (logs in ${tmp})`)
    worker = await startWorker({ url: broker.url, prefix: PREFIX, silent: false, chunks: 0, logFile: join(tmp, 'echo-worker.log') })
    const db = await createLoopDatabase(s.adminDatabaseUrl)
    dropDatabase = db.drop
    log(`bench: database ${db.name} created on ${redact(s.adminDatabaseUrl)} (PostgreSQL ${db.serverVersion})`)

    // Set-up on a gateway of its own, stopped before any mode starts, so that each mode's
    // gateway is fresh and its lag window starts with the load (see WINDOW_OFFSET_MS).
    const t0 = Date.now()
    const setup = await startLoopGateway({
      mode: 'pool', mqttUrl: broker.url, prefix: PREFIX, databaseUrl: db.url, dataDir: join(tmp, 'data-setup'), authSecret,
      logFile: join(tmp, 'gateway-setup.log'), readyTimeoutMs: s.readyTimeoutMs, historyMaxMessages: s.historyMessages, historyMaxTokens: s.historyMaxTokens
    })
    gateways.add(setup)
    let seeded: Awaited<ReturnType<typeof seedUsers>>
    try {
      seeded = await seedUsers({ port: setup.port, databaseUrl: db.url, users: s.users, historyMessages: s.historyMessages, messageChars: s.messageChars })
    } finally {
      await setup.stop()
      gateways.delete(setup)
    }
    log(`bench: ${seeded.users.length} users, one session each, ${seeded.rows} history rows in ${Date.now() - t0} ms`)
    const rnd = prng(0xc4a7)
    const contents = Array.from({ length: 64 }, () => prose(rnd, s.chatChars))

    const report: LoopReport = {
      command: commandLine(),
      started_at: new Date(t0).toISOString(),
      machine,
      settings: {
        window_s: s.measureS,
        window_starts_after_ready_s: WINDOW_OFFSET_MS / 1000,
        login_rate_per_s: s.loginRate,
        chat_rate_per_s: s.chatRate,
        probe_every_ms: s.probeMs,
        users: s.users,
        history_messages_seeded: s.historyMessages,
        message_chars: s.messageChars,
        chat_chars: s.chatChars,
        gateway: {
          HISTORY_MAX_MESSAGES: s.historyMessages,
          HISTORY_MAX_CHARS: 10_000_000,
          HISTORY_MAX_TOKENS: s.historyMaxTokens,
          WORKER_THREADS: s.workerThreads ?? 'default (cores - 1, at least 1, at most 4)',
          WORKER_MAX_QUEUE: s.workerMaxQueue ?? 'default (32)',
          WORKER_TASK_TIMEOUT_MS: s.workerTaskTimeoutMs ?? 'default (5000)',
          WORKER_NICE: s.workerNice ?? 'default (10)',
          LOGIN_MAX_FAILURES: 100_000
        },
        login_max_outstanding: s.loginMaxOutstanding,
        chat_max_outstanding: s.chatMaxOutstanding,
        request_timeout_ms: s.requestTimeoutMs,
        modes: s.modes,
        postgres_version: db.serverVersion,
        database: `${redact(db.url)} (created for this run, dropped at its end)`
      },
      modes: [],
      failures
    }
    const ctx: ModeContext = { s, tmp, broker, worker, db, authSecret, users: seeded.users, contents }
    for (const mode of s.modes) {
      try {
        report.modes.push(await runMode(mode, ctx, gateways))
      } catch (err) {
        failures.push(`${mode} mode: ${(err as Error).message}`)
        log(`bench: ${mode} mode failed: ${(err as Error).message}`)
      }
    }

    console.log(markdown(report))
    mkdirSync(RESULTS_DIR, { recursive: true })
    const file = join(RESULTS_DIR, `loop-${report.started_at.replace(/[:.]/g, '-')}.json`)
    writeFileSync(file, JSON.stringify({ ...report, goals: goals(report) }, null, 2) + '\n')
    log(`bench: results written to ${file}`)
    for (const f of failures) log(`bench: FAILED ${f}`)
    const missed = goals(report).filter((g) => g.pass === false).length
    modeFailed = report.modes.some((m) => m.failures.length > 0)
    if (failures.length > 0 || modeFailed) return 1
    return s.strict && missed > 0 ? 1 : 0
  } catch (err) {
    failures.push((err as Error).message)
    log(`bench: ${(err as Error).message}`)
    return 1
  } finally {
    for (const g of gateways) await g.stop()
    await worker?.stop()
    await broker?.stop()
    await cleanUp()
    clearTimeout(watchdog)
    if (failures.length === 0 && !modeFailed && !s.keepLogs) rmSync(tmp, { recursive: true, force: true })
    else log(`bench: logs kept in ${tmp}`)
  }
}

process.on('SIGINT', () => { void cleanUp().finally(() => process.exit(130)) })
process.on('SIGTERM', () => { void cleanUp().finally(() => process.exit(143)) })

main().then((code) => { process.exitCode = code }, async (err: unknown) => {
  log(`bench: ${(err as Error).message}`)
  await cleanUp()
  process.exitCode = 1
})
