/**
 * bench:ws — N authenticated hint sockets held from separate client processes: time to open,
 * server RSS per connection, hints published at a fixed rate (delivered/expected, publish to
 * receive latency), a stepped rate to find the sustained deliveries/s, then streamed chat over
 * the chat socket. `npm run bench:ws`; method and goals in docs/benchmarks.md ("bench:ws").
 *
 * Settings: the variables read in bench/ws/settings.ts, each with its default and meaning
 * in docs/benchmarks.md ("bench:ws").
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import type { MqttClient } from 'mqtt'
import { createAccount } from './lib/accounts.js'
import { createBenchDatabase, redact } from './lib/database.js'
import { TOPIC_PREFIX } from './lib/gateway.js'
import { machineInfo } from './lib/machine-info.js'
import { seriesOf } from './lib/metrics.js'
import { mosquittoVersion, startMosquitto, type Broker } from './lib/mosquitto.js'
import { connectNoDelay, endClient } from './lib/mqtt-socket.js'
import { isRunning, sleep, waitUntil } from './lib/proc.js'
import { exitCode, writeResults } from './lib/results.js'
import { createRun, log } from './lib/run.js'
import { commandLine, envReader } from './lib/settings.js'
import { round3, summarizeParts } from './lib/stats.js'
import { startWorker } from './lib/worker.js'
import { ask, startClients, type Client } from './ws/clients.js'
import { startWsGateway, warnLines, type WsGateway } from './ws/gateway.js'
import { mergeHintPhase } from './ws/hint-phase.js'
import { SLOW_MS } from './ws/hints.js'
import { perItem, readMemory, rssBytes } from './ws/memory.js'
import { startWindow } from './ws/phase-window.js'
import { epochMinusMonoMs, epochMs } from './ws/protocol.js'
import { publishHints } from './ws/publisher.js'
import { goals, markdown, type HintPhaseResult, type WsReport } from './ws/report.js'
import { fdLimitProblem, readSettings } from './ws/settings.js'

/** After the publisher stops, how long late deliveries may take before they count as missing. */
const DRAIN_MS = 3000
const MEMORY_RE = /^nodejs_heap_size_used_bytes$/
const WS_RE = /^tether_ws_/

const run = createRun('bench:ws')

async function main (): Promise<number> {
  const s = readSettings()
  const fail = envReader('bench:ws').fail
  let mosquitto = ''
  try { mosquitto = mosquittoVersion(s.mosquittoBin) } catch (err) { fail((err as Error).message) }
  const machine = machineInfo(mosquitto)
  const fdProblem = fdLimitProblem(s, machine.ulimit_nofile)
  if (fdProblem !== undefined) fail(fdProblem)
  const tmp = mkdtempSync(join(tmpdir(), 'tether-benchws-'))
  run.arm(s.maxSeconds)
  run.defer(() => { if (!s.keepTmp) rmSync(tmp, { recursive: true, force: true }) })
  const failures: string[] = []
  const authSecret = randomBytes(32).toString('hex')

  const wsVersion = (JSON.parse(readFileSync(fileURLToPath(new URL('../../node_modules/ws/package.json', import.meta.url)), 'utf8')) as { version: string }).version
  const report: WsReport = {
    command: commandLine('bench:ws', ['ECHO_CHUNKS', 'MOSQUITTO_BIN']),
    started_at: new Date().toISOString(),
    machine,
    settings: {
      sockets: s.sockets, sessions: s.sessions, per_session: s.perSession, client_procs: s.clientProcs, open_concurrency: s.openConcurrency,
      idle_s: s.idleS, hint_rate: s.hintRate, seconds: s.seconds, steps_deliveries_per_s: s.steps, step_seconds: s.stepSeconds,
      step_p99_ms: s.stepP99Ms, qos: s.qos, phases: [...s.phases], chat_sockets: s.chatSockets, chat_rate: s.chatRate,
      chat_seconds: s.chatSeconds, echo_chunks: s.echoChunks, ws_version: wsVersion, drain_ms: DRAIN_MS, force_gc: s.forceGc
    },
    phases: [],
    failures
  }
  log(`bench:ws: load average ${machine.loadavg_1m_at_start} at start; temp dir ${tmp}`)
  let gateway: WsGateway | undefined
  let broker: Broker | undefined
  let publisher: MqttClient | undefined
  let clients: Client[] = []
  try {
    broker = await startMosquitto(tmp, s.mosquittoBin)
    report.settings.mosquitto_config = broker.config
    const db = await createBenchDatabase({ adminUrl: s.adminDatabaseUrl, namePrefix: 'tether_benchws_', applicationName: 'tether-bench-ws' })
    run.defer(db.drop)
    report.settings.postgres_version = db.serverVersion
    report.settings.database = `${redact(db.url)} (created for this run, dropped at its end)`
    const dataDir = join(tmp, 'data')
    mkdirSync(dataDir)
    gateway = await startWsGateway({ mqttUrl: broker.url, prefix: TOPIC_PREFIX, databaseUrl: db.url, dataDir, authSecret, logFile: join(tmp, 'gateway.log'), readyTimeoutMs: s.readyTimeoutMs, inspect: s.forceGc, ...(s.idleTimeoutS !== undefined ? { idleTimeoutS: s.idleTimeoutS } : {}) })
    report.settings.gateway_env = { ...gateway.env, AUTH_SECRET: '(64 random hex)', DATABASE_URL: redact(db.url), DATA_DIR: '(temp dir)' }
    const gw = gateway
    log(`bench:ws: gateway on port ${gw.port}; creating the user and ${s.sessions} sessions`)
    const account = await createAccount(gw.port, { username: `benchws_${randomBytes(4).toString('hex')}`, sessions: s.sessions, sessionTitle: (i) => `bench ws ${i}` })
    const worker = await startWorker({ url: broker.url, prefix: TOPIC_PREFIX, silent: false, chunks: s.echoChunks, logFile: join(tmp, 'echo-worker.log') })

    // Client processes: sessions dealt round-robin, so each holds whole sessions. They time
    // hints on the monotonic clock plus this process's epoch base, as the publisher does.
    const epochBase = epochMinusMonoMs()
    clients = await startClients({ count: s.clientProcs, sessionIds: account.sessionIds, maxLifeMs: s.maxSeconds * 1000, epochBase, logDir: tmp })
    const offsets = [epochBase, ...clients.map((c) => c.epochMinusMono)]
    report.time_origin_spread_ms = round3(Math.max(...offsets) - Math.min(...offsets))
    const pids: Record<string, number | undefined> = { gateway: gw.proc.child.pid, broker: broker.proc.child.pid, publisher: process.pid, worker: worker.proc.child.pid }
    clients.forEach((c, k) => { pids[`client${k}`] = c.pid })
    const alive = (): void => {
      if (!isRunning(gw.proc.child)) throw new Error(`the gateway exited (code ${gw.proc.child.exitCode}, signal ${gw.proc.child.signalCode}):\n${gw.proc.tail(30)}`)
    }

    // Memory before: set-up done, no socket open, a moment to settle.
    await sleep(2000)
    const memGw = { port: gw.port, pid: gw.proc.child.pid, inspector: gw.inspector }
    const memBefore = await readMemory(memGw)

    log(`bench:ws: opening ${s.sockets} hint sockets (${s.openConcurrency} handshakes in flight)`)
    const t0 = performance.now()
    const opened = await Promise.all(clients.map(async (c) => await ask(c, {
      cmd: 'open', port: gw.port, token: account.token, sessions: c.sessions, sessionsTotal: s.sessions, perSession: s.perSession,
      concurrency: Math.max(1, Math.round(s.openConcurrency / s.clientProcs)), timeoutMs: 10_000
    }, 'opened')))
    const openS = (performance.now() - t0) / 1000
    const openedAtEpochMs = epochMs()
    const failed: Record<string, number> = {}
    for (const o of opened) for (const [k, v] of Object.entries(o.failed)) failed[k] = (failed[k] ?? 0) + v
    const openedN = opened.reduce((n, o) => n + o.opened, 0)
    alive()
    // Idle: RSS and V8 heapUsed once a second, so a GC landing in the window is visible.
    const idleSeries: Array<{ t_s: number, rss_bytes: number | undefined, heap_used_bytes: number | undefined }> = []
    const idleEnd = performance.now() + s.idleS * 1000
    for (let i = 0; i < 600 && performance.now() < idleEnd; i++) {
      await sleep(Math.min(1000, Math.max(0, idleEnd - performance.now())))
      const heap = (await seriesOf(gw.port, MEMORY_RE)).nodejs_heap_size_used_bytes
      idleSeries.push({ t_s: round3(s.idleS - (idleEnd - performance.now()) / 1000), rss_bytes: rssBytes(gw.proc.child.pid), heap_used_bytes: typeof heap === 'number' ? heap : undefined })
    }
    const memAfter = await readMemory(memGw)
    const wsAfterOpen = await seriesOf(gw.port, WS_RE)
    report.open = {
      planned: s.sockets,
      opened: openedN,
      failed,
      time_to_open_s: round3(openS),
      opens_per_s: round3(openedN / openS),
      per_socket: summarizeParts(opened.map((o) => o.open_ms)),
      per_client_elapsed_ms: opened.map((o) => Math.round(o.elapsed_ms)),
      gateway_hint_sockets: num0(wsAfterOpen['tether_ws_connections{endpoint="hints"}']),
      gateway_hint_subscriptions: num0(wsAfterOpen.tether_ws_hint_subscriptions)
    }
    const rawPer = perItem(memBefore.rss_raw_bytes, memAfter.rss_raw_bytes, openedN)
    const gcPer = perItem(memBefore.rss_after_gc_bytes, memAfter.rss_after_gc_bytes, openedN)
    report.memory = {
      before: memBefore,
      after: memAfter,
      forced_gc: gcPer !== undefined,
      idle_s: s.idleS,
      sockets: openedN,
      rss_per_connection_bytes: gcPer ?? rawPer,
      rss_per_connection_raw_bytes: rawPer,
      heap_used_per_connection_bytes: gcPer !== undefined
        ? perItem(memBefore.heap_used_after_gc_bytes, memAfter.heap_used_after_gc_bytes, openedN)
        : perItem(memBefore.heap_used_raw_bytes, memAfter.heap_used_raw_bytes, openedN),
      idle_series: idleSeries
    }
    for (const m of [memBefore, memAfter]) if (m.gc_error !== undefined) failures.push(`forced GC through the inspector failed: ${m.gc_error}`)
    log(`bench:ws: ${openedN}/${s.sockets} open in ${openS.toFixed(2)} s; RSS ${report.memory.rss_per_connection_bytes ?? '?'} B per connection`)
    if (openedN === 0) throw new Error(`no hint socket opened (failures: ${JSON.stringify(failed)})`)

    publisher = await connectNoDelay({ url: broker.url, clientIdPrefix: 'bench-ws-pub' })
    const pub = publisher
    const sessionIds = account.sessionIds
    let phaseId = 0
    const runPhase = async (name: string, kind: HintPhaseResult['kind'], hintsPerS: number, durationS: number): Promise<HintPhaseResult> => {
      const id = phaseId++
      const maxSeq = Math.max(1, Math.round(hintsPerS * durationS))
      await Promise.all(clients.map(async (c) => await ask(c, { cmd: 'phase', phase: id, maxSeq }, 'phase-ready')))
      const window = await startWindow(pids, gw.port, machine.cpus)
      const published = await publishHints(pub, { prefix: TOPIC_PREFIX, sessionIds, phase: id, ratePerS: hintsPerS, durationS, qos: s.qos })
      const results = await Promise.all(clients.map(async (c) => await ask(c, { cmd: 'collect', phase: id, published: published.published, drainMs: DRAIN_MS }, 'phase-result')))
      const measured = await window.finish()
      alive()
      const result = mergeHintPhase({ name, kind, targetDeliveriesPerS: hintsPerS * s.perSession, published, results, window: measured, openedAtEpochMs })
      report.phases.push(result)
      log(`bench:ws: ${name} (at +${result.started_s_after_open} s): ${result.delivered}/${result.expected} delivered, ${result.deliveries_per_s.toFixed(0)}/s, p50 ${result.latency.p50_ms} ms, ` +
        `p99 ${result.latency.p99_ms} ms, max ${result.latency.max_ms} ms; publisher ${published.hints_per_s.toFixed(0)} hints/s (lag max ${published.publisher_max_lag_ms} ms); ` +
        `CPU ${JSON.stringify(measured.cpu_percent)}; machine ${JSON.stringify(measured.machine_percent)}; gateway loop ${JSON.stringify(measured.gateway_loop_delay)}, GC ${JSON.stringify(measured.gateway_gc)}; major faults ${JSON.stringify(measured.major_faults)}, vmstat ${JSON.stringify(measured.vmstat)}; ` +
        `slow (>${SLOW_MS} ms) by second ${JSON.stringify(result.per_second.map((x) => x.slow))}, server pings by second ${JSON.stringify(result.per_second.map((x) => x.pings))}; clients: loop delay max ${JSON.stringify(result.client_loop_delay_max_ms)} ms, GC max ${JSON.stringify(result.client_gc_max_ms)} ms`)
      await sleep(1000)
      return result
    }

    if (s.phases.has('fixed') || s.phases.has('steps')) {
      await runPhase('warm-up', 'warm-up', s.hintRate, 2)
    }
    if (s.phases.has('fixed')) {
      await runPhase('A', 'fixed', s.hintRate, s.seconds)
    }
    if (s.phases.has('steps')) {
      let best: HintPhaseResult | undefined
      let stoppedAt: string | undefined
      for (const [i, target] of s.steps.entries()) {
        const name = `B${i + 1}`
        const r = await runPhase(name, 'step', target / s.perSession, s.stepSeconds)
        const why: string[] = []
        if (r.expected === 0 || r.delivered !== r.expected) why.push(`${r.delivered}/${r.expected} delivered`)
        if (r.duplicates > 0 || r.misrouted > 0) why.push(`${r.duplicates} duplicates, ${r.misrouted} misrouted`)
        if (Object.keys(r.closes).length > 0) why.push('sockets closed')
        if (r.latency.p99_ms >= s.stepP99Ms) why.push(`p99 ${r.latency.p99_ms} ms`)
        if (r.publish.cut_short || r.publish.hints_per_s < 0.95 * r.publish.hints_per_s_target) why.push(`publisher reached ${Math.round(r.publish.hints_per_s)} of ${r.publish.hints_per_s_target} hints/s`)
        const held = why.length === 0
        report.phases[report.phases.length - 1] = { ...r, held, ...(held ? {} : { why_not: why.join('; ') }) }
        if (!held) { stoppedAt = `${name} (${target.toLocaleString('en-US')}/s: ${why.join('; ')})`; break }
        best = r
      }
      report.sustained = { best_deliveries_per_s: best?.deliveries_per_s, best_step: best?.name, stopped_at: stoppedAt }
    }
    await endClient(pub)
    publisher = undefined

    if (s.phases.has('chat')) {
      const c0 = clients[0] as Client
      log(`bench:ws: streamed chat: ${s.chatSockets} chat sockets, ${s.chatRate} chats/s for ${s.chatSeconds} s, ${s.echoChunks} chunks each`)
      const window = await startWindow(pids, gw.port, machine.cpus)
      const chat = await ask(c0, {
        cmd: 'chat',
        opts: {
          port: gw.port, token: account.token, sessionIds, sockets: s.chatSockets, ratePerS: s.chatRate, durationS: s.chatSeconds,
          chunks: s.echoChunks, drainMs: 10_000, openConcurrency: 50, openTimeoutMs: 10_000
        }
      }, 'chat-result')
      const measured = await window.finish()
      alive()
      report.chat = {
        sockets: s.chatSockets,
        sockets_opened: chat.sockets_opened,
        open_failed: chat.open_failed,
        rate_per_s: s.chatRate,
        sent: chat.sent,
        completed: chat.completed,
        bad: chat.bad,
        unfinished: chat.unfinished,
        errors: chat.errors,
        chats_per_s: round3(chat.completed / Math.max(chat.send_window_s, 0.001)),
        first_chunk: summarizeParts([chat.first_chunk_ms]),
        done: summarizeParts([chat.done_ms]),
        client_elu: round3(chat.elu),
        cpu_percent: measured.cpu_percent,
        machine_percent: measured.machine_percent,
        gateway_loop_delay: measured.gateway_loop_delay,
        gateway_gc: measured.gateway_gc,
        major_faults: measured.major_faults,
        vmstat: measured.vmstat,
        closes: chat.closes
      }
      log(`bench:ws: chat: ${chat.completed}/${chat.sent} completed, first chunk p99 ${report.chat.first_chunk.p99_ms} ms, done p99 ${report.chat.done.p99_ms} ms`)
    }

    // Teardown, observed: the clients close (1000), the gateway's gauges must return to 0.
    const closed = await Promise.all(clients.map(async (c) => await ask(c, { cmd: 'close', timeoutMs: 15_000 }, 'closed', 30_000)))
    const drained = await waitUntil(async () => {
      const m = await seriesOf(gw.port, WS_RE)
      return m['tether_ws_connections{endpoint="hints"}'] === 0 && m['tether_ws_connections{endpoint="chat"}'] === 0 && m.tether_ws_hint_subscriptions === 0
    }, 10_000, 200)
    const wsEnd = await seriesOf(gw.port, WS_RE)
    const rssEnd = rssBytes(gw.proc.child.pid)
    const exit = await gw.stop()
    report.teardown = {
      client_closed: closed.reduce((n, c) => n + c.closed, 0),
      client_still_open: closed.reduce((n, c) => n + c.still_open, 0),
      gateway_gauges_back_to_zero_within_10_s: drained,
      gateway_rss_at_end_bytes: rssEnd,
      gateway_ws_series_at_end: wsEnd,
      gateway_exit: exit
    }
    if (!drained) failures.push(`the gateway's WebSocket gauges did not return to 0 within 10 s of the clients closing: ${JSON.stringify(wsEnd)}`)
    if (exit.code !== 0) failures.push(`the gateway exited with code ${exit.code} (signal ${exit.signal}) on SIGTERM`)
  } catch (err) {
    failures.push((err as Error).stack ?? String(err))
    log(`bench:ws: ${(err as Error).message}`)
  } finally {
    if (publisher !== undefined) await endClient(publisher).catch(() => undefined)
    if (gateway !== undefined) {
      const out = warnLines(gateway.proc.logFile, 5)
      report.gateway_output = { lines: out.count, by_message: out.by_message, first: out.first }
    }
    await run.cleanUp()
    run.disarm()
  }

  const md = markdown(report)
  console.log(md)
  const file = writeResults('ws', report.started_at, { ...report, goals: goals(report), markdown: md })
  log(`bench:ws: results in ${file}`)
  return exitCode(failures.length > 0, goals(report), s.strict)
}

function num0 (v: number | string | undefined): number | undefined { return typeof v === 'number' ? v : undefined }

run.exitWith(main, { exitAtOnce: true })
