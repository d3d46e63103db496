/**
 * bench:ws — N authenticated hint sockets held from separate client processes: time to open,
 * server RSS per connection, hints published at a fixed rate (delivered/expected, publish to
 * receive latency), a stepped rate to find the sustained deliveries/s, then streamed chat over
 * the chat socket. `npm run bench:ws`; method and goals in docs/benchmarks.md ("bench:ws").
 *
 * Env (all optional): BENCH_WS_SOCKETS (10000), BENCH_WS_SESSIONS (1000), BENCH_WS_CLIENT_PROCS (2),
 * BENCH_WS_OPEN_CONCURRENCY (200), BENCH_WS_IDLE_S (3), BENCH_WS_HINT_RATE (1000 hints/s),
 * BENCH_WS_SECONDS (10), BENCH_WS_STEPS ("20000,30000,40000,50000,60000,80000,100000" deliveries/s),
 * BENCH_WS_STEP_SECONDS (5), BENCH_WS_STEP_P99_MS (100), BENCH_WS_QOS (1), BENCH_WS_PHASES
 * ("fixed,steps,chat"), BENCH_WS_CHAT_SOCKETS (100), BENCH_WS_CHAT_RATE (200 chats/s),
 * BENCH_WS_CHAT_SECONDS (10), ECHO_CHUNKS (5), BENCH_DATABASE_URL, BENCH_READY_TIMEOUT_S (60),
 * BENCH_MAX_SECONDS (480, whole-run watchdog), MOSQUITTO_BIN, BENCH_STRICT=1 (exit 1 on a missed goal),
 * BENCH_WS_FORCE_GC=0 (no inspector on the gateway: RSS read without forced GCs), BENCH_KEEP_TMP=1,
 * BENCH_WS_IDLE_TIMEOUT_S (unset: the gateway's default; passed as WS_IDLE_TIMEOUT_S).
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import type { MqttClient } from 'mqtt'
import { mosquittoVersion, startMosquitto, type Broker } from './lib/mosquitto.js'
import { connectNoDelay, endClient } from './lib/mqtt-socket.js'
import { startWorker } from './lib/worker.js'
import { forkNode, isRunning, nextMessage, sleep, stopAll, waitUntil, type Started } from './lib/proc.js'
import { machineInfo } from './lib/report.js'
import { createWsBenchDatabase, redact, DEFAULT_ADMIN_URL, type WsBenchDatabase } from './lib/ws-database.js'
import { createWsBenchAccount } from './lib/ws-account.js'
import { rssBytes, seriesOf, startWsGateway, warnLines, type WsGateway } from './lib/ws-gateway.js'
import { perItem, readMemory } from './lib/ws-memory.js'
import { publishHints } from './lib/ws-publisher.js'
import { startWindow } from './lib/ws-machine.js'
import { mergeHintPhase } from './lib/ws-phase.js'
import { SLOW_MS } from './lib/ws-hints.js'
import { epochMinusMonoMs, epochMs, type ClientCommand, type ClientMessage, type SessionRef } from './lib/ws-protocol.js'
import { goals, markdown, summarize, type HintPhaseResult, type WsReport } from './lib/ws-report.js'

const PREFIX = 'llm'
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url))
const CLIENT_JS = fileURLToPath(new URL('./ws-client.js', import.meta.url))
/** Bound on a client's answer to one command (opening 10,000 sockets included). */
const ANSWER_TIMEOUT_MS = 120_000
/** After the publisher stops, how long late deliveries may take before they count as missing. */
const DRAIN_MS = 3000
const MEMORY_RE = /^nodejs_heap_size_used_bytes$/
const WS_RE = /^tether_ws_/

type Phase = 'fixed' | 'steps' | 'chat'

interface Settings {
  readonly sockets: number
  readonly sessions: number
  readonly perSession: number
  readonly clientProcs: number
  readonly openConcurrency: number
  readonly idleS: number
  readonly hintRate: number
  readonly seconds: number
  readonly steps: number[]
  readonly stepSeconds: number
  readonly stepP99Ms: number
  readonly qos: 0 | 1
  readonly phases: Set<Phase>
  readonly chatSockets: number
  readonly chatRate: number
  readonly chatSeconds: number
  readonly echoChunks: number
  readonly adminDatabaseUrl: string
  readonly readyTimeoutMs: number
  readonly maxSeconds: number
  readonly mosquittoBin: string
  readonly strict: boolean
  readonly forceGc: boolean
  readonly idleTimeoutS: number | undefined
}

function bad (line: string): never {
  console.error(`bench:ws: ${line}`)
  process.exit(78)
}

function num (name: string, fallback: number, min: number, max: number, integer = true): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) bad(`${name} must be a ${integer ? 'whole ' : ''}number between ${min} and ${max}, got "${raw}"`)
  return n
}

function readSettings (): Settings {
  const sockets = num('BENCH_WS_SOCKETS', 10_000, 1, 100_000)
  const sessions = num('BENCH_WS_SESSIONS', 1000, 1, 10_000)
  if (sockets % sessions !== 0) bad(`BENCH_WS_SOCKETS (${sockets}) must be a multiple of BENCH_WS_SESSIONS (${sessions}): sockets are spread evenly`)
  const steps = (process.env.BENCH_WS_STEPS ?? '20000,30000,40000,50000,60000,80000,100000').split(',').map((x) => Number(x.trim()))
  if (steps.length > 12 || steps.some((x) => !Number.isInteger(x) || x < 1 || x > 1_000_000)) bad(`BENCH_WS_STEPS must be at most 12 whole numbers 1..1000000 (deliveries/s), got "${process.env.BENCH_WS_STEPS}"`)
  const phases = new Set<Phase>()
  for (const p of (process.env.BENCH_WS_PHASES ?? 'fixed,steps,chat').split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    if (p !== 'fixed' && p !== 'steps' && p !== 'chat') bad(`BENCH_WS_PHASES takes fixed, steps, chat; got "${p}"`)
    phases.add(p)
  }
  const adminDatabaseUrl = process.env.BENCH_DATABASE_URL ?? DEFAULT_ADMIN_URL
  if (!/^postgres(ql)?:\/\//.test(adminDatabaseUrl)) bad('BENCH_DATABASE_URL must be a postgres:// URL of a server where the login may CREATE DATABASE')
  return {
    sockets,
    sessions,
    perSession: sockets / sessions,
    clientProcs: num('BENCH_WS_CLIENT_PROCS', 2, 1, 8),
    openConcurrency: num('BENCH_WS_OPEN_CONCURRENCY', 200, 1, 5000),
    idleS: num('BENCH_WS_IDLE_S', 3, 0, 60, false),
    hintRate: num('BENCH_WS_HINT_RATE', 1000, 1, 100_000),
    seconds: num('BENCH_WS_SECONDS', 10, 1, 120, false),
    steps: [...new Set(steps)].sort((a, b) => a - b),
    stepSeconds: num('BENCH_WS_STEP_SECONDS', 5, 1, 60, false),
    stepP99Ms: num('BENCH_WS_STEP_P99_MS', 100, 1, 10_000, false),
    qos: num('BENCH_WS_QOS', 1, 0, 1) as 0 | 1,
    phases,
    chatSockets: num('BENCH_WS_CHAT_SOCKETS', 100, 1, 5000),
    chatRate: num('BENCH_WS_CHAT_RATE', 200, 1, 10_000),
    chatSeconds: num('BENCH_WS_CHAT_SECONDS', 10, 1, 120, false),
    echoChunks: num('ECHO_CHUNKS', 5, 0, 1000),
    adminDatabaseUrl,
    readyTimeoutMs: num('BENCH_READY_TIMEOUT_S', 60, 1, 600) * 1000,
    maxSeconds: num('BENCH_MAX_SECONDS', 480, 30, 3600),
    mosquittoBin: process.env.MOSQUITTO_BIN ?? 'mosquitto',
    strict: process.env.BENCH_STRICT === '1',
    forceGc: process.env.BENCH_WS_FORCE_GC !== '0',
    idleTimeoutS: process.env.BENCH_WS_IDLE_TIMEOUT_S === undefined || process.env.BENCH_WS_IDLE_TIMEOUT_S === '' ? undefined : num('BENCH_WS_IDLE_TIMEOUT_S', 32, 8, 960)
  }
}

function commandLine (): string {
  const vars = Object.keys(process.env).filter((k) => k.startsWith('BENCH_') || k === 'ECHO_CHUNKS' || k === 'MOSQUITTO_BIN').sort()
    .map((k) => `${k}=${k === 'BENCH_DATABASE_URL' ? redact(process.env[k] ?? '') : process.env[k] ?? ''}`)
  return [...vars, 'npm run bench:ws'].join(' ')
}

function log (line: string): void { process.stderr.write(`${line}\n`) }

/**
 * File descriptors: the gateway holds one per socket (plus its pool, broker link and listener);
 * each client process one per socket it holds. Checked, never raised: raising limits is the
 * operator's call.
 */
function checkFdLimit (s: Settings, nofile: number | undefined): void {
  if (nofile === undefined) return
  const gatewayNeeds = s.sockets + s.chatSockets + 512
  const clientNeeds = Math.ceil(s.sockets / s.clientProcs) + s.chatSockets + 256
  if (nofile < Math.max(gatewayNeeds, clientNeeds)) {
    bad(`ulimit -n is ${nofile}, too low for ${s.sockets} sockets: the gateway needs about ${gatewayNeeds} descriptors and each of the ` +
      `${s.clientProcs} client processes about ${clientNeeds}. Lower BENCH_WS_SOCKETS or raise the limit (ulimit -n) yourself.`)
  }
}

interface Client { readonly proc: Started, readonly pid: number, readonly sessions: SessionRef[], readonly epochMinusMono: number }

async function ask<T extends ClientMessage['type']> (c: Client, cmd: ClientCommand, want: T, timeoutMs = ANSWER_TIMEOUT_MS): Promise<Extract<ClientMessage, { type: T }>> {
  const answer = nextMessage(c.proc.child, (m): m is ClientMessage => typeof m === 'object' && m !== null && ((m as ClientMessage).type === want || (m as ClientMessage).type === 'error'),
    timeoutMs, `ws-client ${c.pid} (${cmd.cmd})`)
  c.proc.child.send(cmd)
  const m = await answer
  if (m.type === 'error') throw new Error(`ws-client ${c.pid}: ${m.message}\n${c.proc.tail()}`)
  return m as Extract<ClientMessage, { type: T }>
}

let cleanUpDatabase: (() => Promise<string | undefined>) | undefined
let tmpDir: string | undefined

async function cleanUp (): Promise<void> {
  await stopAll()
  const problem = await cleanUpDatabase?.()
  if (problem !== undefined) log(`bench:ws: ${problem}`)
  if (tmpDir !== undefined && process.env.BENCH_KEEP_TMP !== '1') rmSync(tmpDir, { recursive: true, force: true })
}

async function main (): Promise<number> {
  const s = readSettings()
  let mosquitto = ''
  try { mosquitto = mosquittoVersion(s.mosquittoBin) } catch (err) { bad((err as Error).message) }
  const machine = machineInfo(mosquitto)
  checkFdLimit(s, machine.ulimit_nofile)
  const tmp = mkdtempSync(join(tmpdir(), 'tether-benchws-'))
  tmpDir = tmp
  const failures: string[] = []
  const authSecret = randomBytes(32).toString('hex')
  const watchdog = setTimeout(() => {
    log(`bench:ws: still running after ${s.maxSeconds} s (BENCH_MAX_SECONDS); stopping everything`)
    void cleanUp().finally(() => process.exit(2))
  }, s.maxSeconds * 1000)
  watchdog.unref()

  const wsVersion = (JSON.parse(readFileSync(fileURLToPath(new URL('../../node_modules/ws/package.json', import.meta.url)), 'utf8')) as { version: string }).version
  const report: WsReport = {
    command: commandLine(),
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
    const db: WsBenchDatabase = await createWsBenchDatabase(s.adminDatabaseUrl)
    cleanUpDatabase = db.drop
    report.settings.postgres_version = db.serverVersion
    report.settings.database = `${redact(db.url)} (created for this run, dropped at its end)`
    const dataDir = join(tmp, 'data')
    mkdirSync(dataDir)
    gateway = await startWsGateway({ mqttUrl: broker.url, prefix: PREFIX, databaseUrl: db.url, dataDir, authSecret, logFile: join(tmp, 'gateway.log'), readyTimeoutMs: s.readyTimeoutMs, inspect: s.forceGc, ...(s.idleTimeoutS !== undefined ? { idleTimeoutS: s.idleTimeoutS } : {}) })
    report.settings.gateway_env = { ...gateway.env, AUTH_SECRET: '(64 random hex)', DATABASE_URL: redact(db.url), DATA_DIR: '(temp dir)' }
    const gw = gateway
    log(`bench:ws: gateway on port ${gw.port}; creating the user and ${s.sessions} sessions`)
    const account = await createWsBenchAccount(gw.port, s.sessions)
    const worker = await startWorker({ url: broker.url, prefix: PREFIX, silent: false, chunks: s.echoChunks, logFile: join(tmp, 'echo-worker.log') })

    // Client processes: sessions dealt round-robin, so each holds whole sessions. They time
    // hints on the monotonic clock plus this process's epoch base, as the publisher does.
    const epochBase = epochMinusMonoMs()
    clients = await Promise.all(Array.from({ length: s.clientProcs }, async (_, k) => {
      const proc = forkNode(CLIENT_JS, [String(s.maxSeconds * 1000), String(epochBase)], join(tmp, `ws-client-${k}.log`), { serialization: 'advanced' })
      const hello = await nextMessage(proc.child, (m): m is ClientMessage => (m as ClientMessage).type === 'hello', 10_000, `ws-client ${k} start`)
      if (hello.type !== 'hello') throw new Error('ws-client: no hello')
      const sessions = account.sessionIds.map((id, index) => ({ index, id })).filter((x) => x.index % s.clientProcs === k)
      return { proc, pid: hello.pid, sessions, epochMinusMono: hello.epoch_minus_mono_ms }
    }))
    const offsets = [epochBase, ...clients.map((c) => c.epochMinusMono)]
    report.time_origin_spread_ms = round(Math.max(...offsets) - Math.min(...offsets))
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
      idleSeries.push({ t_s: round(s.idleS - (idleEnd - performance.now()) / 1000), rss_bytes: rssBytes(gw.proc.child.pid), heap_used_bytes: typeof heap === 'number' ? heap : undefined })
    }
    const memAfter = await readMemory(memGw)
    const wsAfterOpen = await seriesOf(gw.port, WS_RE)
    report.open = {
      planned: s.sockets,
      opened: openedN,
      failed,
      time_to_open_s: round(openS),
      opens_per_s: round(openedN / openS),
      per_socket: summarize(opened.map((o) => o.open_ms)),
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
      const published = await publishHints(pub, { prefix: PREFIX, sessionIds, phase: id, ratePerS: hintsPerS, durationS, qos: s.qos })
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
        chats_per_s: round(chat.completed / Math.max(chat.send_window_s, 0.001)),
        first_chunk: summarize([chat.first_chunk_ms]),
        done: summarize([chat.done_ms]),
        client_elu: round(chat.elu),
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
    await cleanUp()
    clearTimeout(watchdog)
  }

  const md = markdown(report)
  console.log(md)
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, `ws-${report.started_at.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify({ ...report, goals: goals(report), markdown: md }, null, 2))
  log(`bench:ws: results in ${file}`)
  if (failures.length > 0) return 1
  if (s.strict && goals(report).some((g) => g.pass === false)) return 1
  return 0
}

function round (x: number): number { return Math.round(x * 1000) / 1000 }
function num0 (v: number | string | undefined): number | undefined { return typeof v === 'number' ? v : undefined }

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`bench:ws: ${sig}; stopping everything`)
    void cleanUp().finally(() => process.exit(130))
  })
}

main().then((code) => { process.exit(code) }, (err: unknown) => {
  console.error(err)
  void cleanUp().finally(() => process.exit(1))
})
