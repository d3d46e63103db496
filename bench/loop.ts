/**
 * bench:loop — does the event loop stay responsive under a storm of logins (scrypt) and chats
 * with long histories (token counting)? The same load runs twice: with that work on the worker
 * pool, then with THREAD_INLINE=1, which runs it on the event loop, to show what the pool
 * prevents. `npm run bench:loop`; method and goals in docs/benchmarks.md ("bench:loop").
 *
 * Settings: the variables read in bench/loop/settings.ts, each with its default and meaning
 * in docs/benchmarks.md ("bench:loop").
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createBenchDatabase, redact } from './lib/database.js'
import { TOPIC_PREFIX, type Gateway } from './lib/gateway.js'
import { machineInfo } from './lib/machine-info.js'
import { startMosquitto, type Broker } from './lib/mosquitto.js'
import { exitCode, writeResults } from './lib/results.js'
import { createRun, log } from './lib/run.js'
import { commandLine } from './lib/settings.js'
import { startWorker, type Worker } from './lib/worker.js'
import { startLoopGateway } from './loop/gateway.js'
import { runMode, WINDOW_OFFSET_MS, type ModeContext } from './loop/mode.js'
import { goals, markdown, type LoopReport } from './loop/report.js'
import { prng, prose, seedUsers } from './loop/seed.js'
import { readSettings } from './loop/settings.js'

const run = createRun('bench')

async function main (): Promise<number> {
  const s = readSettings()
  run.arm(s.maxSeconds)
  const tmp = mkdtempSync(join(tmpdir(), 'tether-loop-'))
  const failures: string[] = []
  const gateways = new Set<Gateway>()
  let broker: Broker | undefined
  let worker: Worker | undefined
  let modeFailed = false
  // Signs tokens for both gateways (so the set-up's tokens stay valid); random per run.
  const authSecret = randomBytes(32).toString('hex')

  try {
    broker = await startMosquitto(tmp, s.mosquittoBin)
    const machine = machineInfo(broker.version)
    log(`bench: mosquitto ${broker.version} on ${broker.url}; load average ${machine.loadavg_1m_at_start} at start (logs in ${tmp})`)
    worker = await startWorker({ url: broker.url, prefix: TOPIC_PREFIX, silent: false, chunks: 0, logFile: join(tmp, 'echo-worker.log') })
    const db = await createBenchDatabase({ adminUrl: s.adminDatabaseUrl, namePrefix: 'tether_loop_', applicationName: 'tether-bench-loop' })
    run.defer(db.drop)
    log(`bench: database ${db.name} created on ${redact(s.adminDatabaseUrl)} (PostgreSQL ${db.serverVersion})`)

    // Set-up on a gateway of its own, stopped before any mode starts, so that each mode's
    // gateway is fresh and its lag window starts with the load (see WINDOW_OFFSET_MS).
    const t0 = Date.now()
    const setup = await startLoopGateway({
      mode: 'pool', mqttUrl: broker.url, prefix: TOPIC_PREFIX, databaseUrl: db.url, dataDir: join(tmp, 'data-setup'), authSecret,
      logFile: join(tmp, 'gateway-setup.log'), readyTimeoutMs: s.readyTimeoutMs, historyMaxMessages: s.historyMessages, historyMaxTokens: s.historyMaxTokens,
      passwordHashCost: s.passwordHashCost
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
      command: commandLine('bench:loop', ['MOSQUITTO_BIN']),
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
          THREADS: s.threads ?? 'default (cores - 1, at least 1, at most 4)',
          THREAD_MAX_QUEUE: s.threadMaxQueue ?? 'default (32)',
          THREAD_TASK_TIMEOUT_MS: s.threadTaskTimeoutMs ?? 'default (5000)',
          THREAD_NICE: s.threadNice ?? 'default (10)',
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
    const file = writeResults('loop', report.started_at, { ...report, goals: goals(report) })
    log(`bench: results written to ${file}`)
    for (const f of failures) log(`bench: FAILED ${f}`)
    modeFailed = report.modes.some((m) => m.failures.length > 0)
    return exitCode(failures.length > 0 || modeFailed, goals(report), s.strict)
  } catch (err) {
    failures.push((err as Error).message)
    log(`bench: ${(err as Error).message}`)
    return 1
  } finally {
    for (const g of gateways) await g.stop()
    await worker?.stop()
    await broker?.stop()
    await run.cleanUp()
    run.disarm()
    if (failures.length === 0 && !modeFailed && !s.keepLogs) rmSync(tmp, { recursive: true, force: true })
    else log(`bench: logs kept in ${tmp}`)
  }
}

run.exitWith(main, { exitAtOnce: false })
