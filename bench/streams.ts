/**
 * `npm run bench:streams`: what resumable streams and cancels cost (issue "Answers that
 * survive"). One gateway (relay mode: no token, nothing stored, so only the stream path is
 * measured), a private Mosquitto, and an in-process LLM worker and WebSocket clients:
 *
 * - resume: N chats stream 20 chunks 20 ms apart; after chunk 3 every socket closes; N new
 *   sockets send `resume` with `after_seq: 3` at once. Measured: resume sent -> first replayed
 *   chunk received (goal: p99 < 20 ms at 1,000).
 * - cancel: N chats send one chunk and hold; every client sends `cancel` at once. Measured:
 *   cancel sent -> the worker receiving `llm/chat/cancel` (goal: p99 < 50 ms). The worker and
 *   the clients share this process, so both ends read one clock.
 * - replay memory: S streams in flight holding B bytes each (the worker sends them and holds its
 *   `done`): the gateway's RSS and tether_stream_buffer_bytes, before and after.
 *
 * Settings: BENCH_RESUMES (1000), BENCH_CANCELS (1000), BENCH_WARMUP (300), BENCH_CANCEL_SPREAD_MS (1000), BENCH_REPLAY_STREAMS (10000),
 * BENCH_REPLAY_BYTES (2048), plus the common ones (docs/benchmarks.md, "bench:streams").
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import WebSocket from 'ws'
import { createBenchDatabase } from './lib/database.js'
import { LIMITS_LIFTED, TOPIC_PREFIX, linkEnv, startGateway } from './lib/gateway.js'
import { loadAverage1m, machineInfo } from './lib/machine-info.js'
import { metric } from './lib/metrics.js'
import { mosquittoVersion, startMosquitto } from './lib/mosquitto.js'
import { connectNoDelay, endClient, subscribe } from './lib/mqtt-socket.js'
import { createRun, log } from './lib/run.js'
import { commandLine, envReader, readCommonSettings } from './lib/settings.js'
import { LatencyRecorder, round3, type LatencySummary } from './lib/stats.js'
import { writeResults } from './lib/results.js'
import { maskedTextFrame, rawSocketOf } from './streams/masked-frame.js'

const TAG = 'bench:streams'
const r = envReader(TAG)
const common = readCommonSettings(r, { fallback: 300, min: 30 })
const RESUMES = r.int('BENCH_RESUMES', 1000, 1, 10_000)
const CANCELS = r.int('BENCH_CANCELS', 1000, 1, 10_000)
const WARMUP = r.int('BENCH_WARMUP', 300, 0, 10_000)
const CANCEL_SPREAD_MS = r.int('BENCH_CANCEL_SPREAD_MS', 1000, 1, 60_000)
const REPLAY_STREAMS = r.int('BENCH_REPLAY_STREAMS', 10_000, 1, 20_000)
const REPLAY_BYTES = r.int('BENCH_REPLAY_BYTES', 2048, 16, 65_536)
/** Writes between two chances for the clients to read replies (see burst()). */
const BURST_BATCH = 50
/** Chats per socket in the replay phase: sockets are cheap, but 10,000 of them are not the point. */
const CHATS_PER_SOCKET = 100

const now = (): number => performance.timeOrigin + performance.now()

interface Request { request_id: string, content: string, reply_to: string }

/** The in-process worker: scripted by the chat's content prefix. */
function startWorker (client: MqttClient, cancelledAt: Map<string, number>): void {
  const send = (to: string, msg: object): void => { client.publish(to, JSON.stringify(msg), { qos: 1 }) }
  client.on('message', (topic, payload) => {
    const msg = JSON.parse(payload.toString('utf8')) as Request & { reason?: string }
    if (topic === `${TOPIC_PREFIX}/chat/cancel`) { cancelledAt.set(msg.request_id, now()); return }
    const id = msg.request_id
    const chunk = (seq: number, delta: string): void => { send(msg.reply_to, { v: 1, request_id: id, type: 'chunk', delta, seq }) }
    if (msg.content.startsWith('resume')) {
      let seq = 0
      const timer = setInterval(() => {
        seq++
        if (seq <= 20) { chunk(seq, 'x'.repeat(100)); return }
        clearInterval(timer)
        send(msg.reply_to, { v: 1, request_id: id, type: 'done', content: 'x'.repeat(2000) })
      }, 20)
    } else if (msg.content.startsWith('cancel')) {
      chunk(1, 'first')
    } else if (msg.content.startsWith('replay')) {
      const parts = Math.max(1, Math.ceil(REPLAY_BYTES / 256))
      for (let i = 1; i <= parts; i++) chunk(i, 'y'.repeat(Math.min(256, REPLAY_BYTES - (i - 1) * 256)))
    }
  })
}

/** A chat socket whose frames land in `on`. */
async function socket (port: number, on: (frame: any) => void, raw?: (data: Buffer) => void): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/api/chatbot/ws`)
  ws.on('message', raw ?? ((data) => { on(JSON.parse(data.toString())) }))
  ws.on('error', () => {})
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  return ws
}

async function until (what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

function rssOf (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1]) * 1024
}

/**
 * Runs `send` for 0..n-1. spreadMs 0, a burst: as fast as this process can, letting it read
 * between batches (the clients share one event loop, and one that is busy sending cannot take
 * in replies, so a tight loop charged its own length to the first sockets' latency). Otherwise
 * paced evenly over spreadMs, as independent users would. Resolves to how long sending took.
 */
async function issue (n: number, spreadMs: number, send: (i: number) => void): Promise<number> {
  const t0 = now()
  if (spreadMs === 0) {
    for (let i = 0; i < n; i++) {
      send(i)
      if (i % BURST_BATCH === BURST_BATCH - 1) await new Promise((resolve) => setImmediate(resolve))
    }
  } else {
    let i = 0
    while (i < n) {
      const due = Math.min(n, Math.floor((now() - t0) * n / spreadMs) + 1)
      while (i < due) send(i++)
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
  }
  return now() - t0
}

/** Nanoseconds the process's main thread (the gateway's event loop) has spent on a CPU. */
function mainThreadCpuNs (pid: number): number {
  return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0])
}

function cpuMs (u: NodeJS.CpuUsage): number { return (u.user + u.system) / 1000 }

/** What one phase measured: latencies, how long the clients took to send, the gateway's CPU per operation. */
interface PhaseFigures { sentOverMs: number, gatewayCpuUsPerOp: number, clientCpuMs: number }

async function resumePhase (port: number, pid: number, n: number, tag: string): Promise<PhaseFigures & { latency: LatencySummary }> {
  const started = new Map<number, string>()
  const third = new Set<number>()
  const first: WebSocket[] = []
  for (let i = 0; i < n; i++) {
    first.push(await socket(port, (f) => {
      if (f.type === 'start') started.set(i, f.request_id)
      if (f.type === 'chunk' && f.seq === 3) third.add(i)
    }))
    first[i]?.send(JSON.stringify({ type: 'chat', id: 'c', session_id: `resume-${tag}-${i}`, content: 'resume me' }))
  }
  await until('chunk 3 on every socket', () => third.size === n)
  for (const ws of first) ws.terminate()
  const latencies = new LatencyRecorder()
  const sentAt = new Map<number, number>()
  const second: WebSocket[] = []
  // The rest of each replay is not measured, and 1,000 clients parsing 17 more frames each in
  // this one process would be charged to the sockets still waiting for their first: the first
  // replayed chunk is found by its bytes, nothing is parsed, and its socket stops reading.
  const firstReplayed = Buffer.from('"seq":4,')
  const seen = new Set<number>()
  for (let i = 0; i < n; i++) {
    second.push(await socket(port, () => {}, (data) => {
      if (seen.has(i) || !sentAt.has(i) || !data.includes(firstReplayed)) return
      seen.add(i)
      latencies.add(now() - (sentAt.get(i) as number))
      second[i]?.pause()
    }))
  }
  // Every resume at once: the figure is under 1,000 concurrent resumes. Built first, so that
  // the burst is one write per socket (masked-frame.ts).
  const frames = second.map((_, i) => maskedTextFrame(JSON.stringify({ type: 'resume', id: 'r', request_id: started.get(i), after_seq: 3 })))
  const raw = second.map(rawSocketOf)
  const cpuBefore = mainThreadCpuNs(pid)
  const clientBefore = process.cpuUsage()
  const sentOverMs = await issue(n, 0, (i) => {
    sentAt.set(i, now())
    raw[i]?.write(frames[i] as Buffer)
  })
  await until('the first replayed chunk on every socket', () => latencies.count === n)
  const gatewayCpuUsPerOp = (mainThreadCpuNs(pid) - cpuBefore) / 1000 / n
  const clientCpuMs = cpuMs(process.cpuUsage(clientBefore))
  log(`${TAG}: ${tag}: ${n} resumes sent over ${round3(sentOverMs)} ms; gateway ${round3(gatewayCpuUsPerOp)} µs CPU each; clients ${round3(clientCpuMs)} ms CPU in all`)
  for (const ws of second) ws.terminate()
  return { latency: latencies.summary(), sentOverMs, gatewayCpuUsPerOp, clientCpuMs }
}

async function cancelPhase (port: number, pid: number, cancelledAt: Map<string, number>, n: number, spreadMs: number, tag: string): Promise<PhaseFigures & { worker: LatencySummary, client: LatencySummary }> {
  const ids: string[] = []
  const firstChunk = new Set<string>()
  const sockets: WebSocket[] = []
  // When the client heard its chat end with `cancelled`: the gateway's side alone, no MQTT.
  const endedAt = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    sockets.push(await socket(port, (f) => {
      if (f.type === 'start') ids[i] = f.request_id
      if (f.type === 'chunk') firstChunk.add(f.request_id)
      if (f.type === 'error' && f.error === 'cancelled') endedAt.set(f.request_id, now())
    }))
    sockets[i]?.send(JSON.stringify({ type: 'chat', id: 'c', session_id: `cancel-${tag}-${i}`, content: 'cancel me' }))
  }
  await until('the first chunk of every chat', () => firstChunk.size === n)
  const sentAt = new Map<string, number>()
  const frames = ids.map((id) => maskedTextFrame(JSON.stringify({ type: 'cancel', request_id: id })))
  const raw = sockets.map(rawSocketOf)
  const cpuBefore = mainThreadCpuNs(pid)
  const clientBefore = process.cpuUsage()
  const sentOverMs = await issue(n, spreadMs, (i) => {
    const id = ids[i] as string
    sentAt.set(id, now())
    raw[i]?.write(frames[i] as Buffer)
  })
  await until('every cancel at the worker and every cancelled frame at its client', () => ids.every((id) => cancelledAt.has(id) && endedAt.has(id)))
  const gatewayCpuUsPerOp = (mainThreadCpuNs(pid) - cpuBefore) / 1000 / n
  const clientCpuMs = cpuMs(process.cpuUsage(clientBefore))
  log(`${TAG}: ${tag}: ${n} cancels sent over ${round3(sentOverMs)} ms; gateway ${round3(gatewayCpuUsPerOp)} µs CPU each; clients and worker ${round3(clientCpuMs)} ms CPU in all`)
  const worker = new LatencyRecorder()
  const client = new LatencyRecorder()
  for (const id of ids) {
    worker.add((cancelledAt.get(id) as number) - (sentAt.get(id) as number))
    client.add((endedAt.get(id) as number) - (sentAt.get(id) as number))
  }
  for (const ws of sockets) ws.terminate()
  return { worker: worker.summary(), client: client.summary(), sentOverMs, gatewayCpuUsPerOp, clientCpuMs }
}

async function replayPhase (port: number, pid: number): Promise<{ streams: number, buffer_bytes: number, rss_before_bytes: number, rss_after_bytes: number, rss_per_stream_bytes: number }> {
  const parts = Math.max(1, Math.ceil(REPLAY_BYTES / 256))
  const rssBefore = rssOf(pid)
  const bufferBefore = await metric(port, 'tether_stream_buffer_bytes') ?? 0
  let chunks = 0
  const sockets: WebSocket[] = []
  for (let s = 0; s * CHATS_PER_SOCKET < REPLAY_STREAMS; s++) {
    const ws = await socket(port, (f) => { if (f.type === 'chunk') chunks++ })
    sockets.push(ws)
    for (let c = 0; c < CHATS_PER_SOCKET && s * CHATS_PER_SOCKET + c < REPLAY_STREAMS; c++) {
      ws.send(JSON.stringify({ type: 'chat', id: `c${c}`, session_id: `replay-${s}-${c}`, content: 'replay me' }))
    }
  }
  await until('every chunk of every stream', () => chunks === REPLAY_STREAMS * parts, 120_000)
  const bufferAfter = await metric(port, 'tether_stream_buffer_bytes') ?? 0
  const streams = await metric(port, 'tether_streams') ?? 0
  const rssAfter = rssOf(pid)
  for (const ws of sockets) ws.terminate()
  return {
    streams,
    buffer_bytes: bufferAfter - bufferBefore,
    rss_before_bytes: rssBefore,
    rss_after_bytes: rssAfter,
    rss_per_stream_bytes: Math.round((rssAfter - rssBefore) / REPLAY_STREAMS)
  }
}

const run = createRun(TAG)

async function main (): Promise<number> {
  run.arm(common.maxSeconds)
  const startedAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-streams-'))
  run.defer(() => { rmSync(dir, { recursive: true, force: true }) })
  const loadBefore = loadAverage1m()
  const broker = await startMosquitto(dir, common.mosquittoBin)
  run.defer(async () => { await broker.stop() })
  const database = await createBenchDatabase({ adminUrl: common.adminDatabaseUrl, namePrefix: 'tether_benchstreams_', applicationName: 'tether-bench-streams' })
  run.defer(async () => await database.drop())
  const worker = await connectNoDelay({ url: broker.url, clientIdPrefix: 'bench-streams-worker' })
  run.defer(async () => { await endClient(worker) })
  const cancelledAt = new Map<string, number>()
  startWorker(worker, cancelledAt)
  await subscribe(worker, `${TOPIC_PREFIX}/chat/request`, 1)
  await subscribe(worker, `${TOPIC_PREFIX}/chat/cancel`, 1)
  const gateway = await startGateway({
    label: 'relay',
    logFile: join(dir, 'gateway.log'),
    readyTimeoutMs: common.readyTimeoutMs,
    nodeArgs: r.words('BENCH_GATEWAY_NODE_ARGS'),
    env: (port) => ({
      ...linkEnv({ port, mqttUrl: broker.url, prefix: TOPIC_PREFIX, databaseUrl: database.url, dataDir: dir, authSecret: randomBytes(32).toString('hex'), chatMode: 'relay' }),
      ...LIMITS_LIFTED,
      MAX_PENDING: String(Math.max(20_000, REPLAY_STREAMS + 1000)),
      STREAM_BUFFER_MAX_BYTES: String(1024 * 1024 * 1024),
      CHAT_TIMEOUT_MS: '120000'
    })
  })
  // Stopped here, before the run's cleanup stops every child with a 3 s grace: the held replay
  // streams make its graceful stop drain, and a profile (--cpu-prof) is written only on exit.
  const stopGateway = async (): Promise<void> => {
    const { code, signal } = await gateway.stop()
    if (code !== 0) log(`${TAG}: the gateway ended with ${signal ?? `code ${code}`}; its log:\n${gateway.proc.tail(20)}`)
  }
  const pid = gateway.proc.child.pid as number

  // One unmeasured round of each first: the figures are for a gateway whose resume and cancel
  // paths have run before (JIT-compiled), as in any gateway that has been up for a while.
  log(`${TAG}: warm-up, ${WARMUP} resumes and ${WARMUP} cancels`)
  await resumePhase(gateway.port, pid, WARMUP, 'warmup')
  await cancelPhase(gateway.port, pid, cancelledAt, WARMUP, 0, 'warmup')
  log(`${TAG}: resume phase, ${RESUMES} streams`)
  const resumed = await resumePhase(gateway.port, pid, RESUMES, 'measured')
  const resume = resumed.latency
  log(`${TAG}: cancel phase, ${CANCELS} chats at once`)
  const herd = await cancelPhase(gateway.port, pid, cancelledAt, CANCELS, 0, 'herd')
  const { worker: cancel, client: cancelEcho } = herd
  log(`${TAG}: cancel phase, ${CANCELS} chats in flight, cancelled over ${CANCEL_SPREAD_MS} ms`)
  const paced = await cancelPhase(gateway.port, pid, cancelledAt, CANCELS, CANCEL_SPREAD_MS, 'paced')
  log(`${TAG}: replay memory, ${REPLAY_STREAMS} streams of ${REPLAY_BYTES} B`)
  const replay = await replayPhase(gateway.port, pid)
  const loadAfter = loadAverage1m()

  const goals = [
    { goal: `resume to first replayed chunk p99, ${RESUMES} at once`, target: '< 20 ms', measured: `${round3(resume.p99_ms)} ms`, pass: resume.p99_ms < 20 },
    { goal: `client cancel to the worker receiving it p99, ${CANCELS} chats in flight, Stops over ${CANCEL_SPREAD_MS} ms`, target: '< 50 ms', measured: `${round3(paced.worker.p99_ms)} ms`, pass: paced.worker.p99_ms < 50 }
  ]
  const machine = machineInfo(mosquittoVersion(common.mosquittoBin))
  const lines = [
    `### bench:streams — ${startedAt}`,
    '',
    `Command: \`${commandLine('bench:streams', [])}\``,
    '',
    `Machine: ${JSON.stringify(machine)}; load average ${loadBefore} at start, ${loadAfter} at end`,
    '',
    '| measure | n | p50 ms | p90 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|---:|---:|',
    `| resume sent -> first replayed chunk | ${resume.count} | ${round3(resume.p50_ms)} | ${round3(resume.p90_ms)} | ${round3(resume.p99_ms)} | ${round3(resume.max_ms)} |`,
    `| cancel sent -> worker receives llm/chat/cancel | ${cancel.count} | ${round3(cancel.p50_ms)} | ${round3(cancel.p90_ms)} | ${round3(cancel.p99_ms)} | ${round3(cancel.max_ms)} |`,
    `| cancel sent -> client's \`cancelled\` frame (no MQTT) | ${cancelEcho.count} | ${round3(cancelEcho.p50_ms)} | ${round3(cancelEcho.p90_ms)} | ${round3(cancelEcho.p99_ms)} | ${round3(cancelEcho.max_ms)} |`,
    `| paced (Stops over ${CANCEL_SPREAD_MS} ms): cancel sent -> worker receives llm/chat/cancel | ${paced.worker.count} | ${round3(paced.worker.p50_ms)} | ${round3(paced.worker.p90_ms)} | ${round3(paced.worker.p99_ms)} | ${round3(paced.worker.max_ms)} |`,
    `| paced: cancel sent -> client's \`cancelled\` frame | ${paced.client.count} | ${round3(paced.client.p50_ms)} | ${round3(paced.client.p90_ms)} | ${round3(paced.client.p99_ms)} | ${round3(paced.client.max_ms)} |`,
    '',
    `Bursts: the ${RESUMES} resumes left the clients over ${round3(resumed.sentOverMs)} ms, the ${CANCELS} cancels over ${round3(herd.sentOverMs)} ms. CPU from the first send to the last measured reply: the gateway's event loop (its main thread's /proc schedstat, replies and whole replays included) ${round3(resumed.gatewayCpuUsPerOp)} µs per resume and ${round3(herd.gatewayCpuUsPerOp)} µs per cancel, ${round3(resumed.gatewayCpuUsPerOp * RESUMES / 1000)} ms and ${round3(herd.gatewayCpuUsPerOp * CANCELS / 1000)} ms for the bursts; the bench process (clients, and the LLM worker for cancels) ${round3(resumed.clientCpuMs)} ms and ${round3(herd.clientCpuMs)} ms.`,
    '',
    `Replay buffers: ${replay.streams} streams kept, ${REPLAY_STREAMS} of them in flight holding ${REPLAY_BYTES} B of text each: tether_stream_buffer_bytes +${replay.buffer_bytes} (UTF-16), gateway RSS ${Math.round(replay.rss_before_bytes / 1048576)} -> ${Math.round(replay.rss_after_bytes / 1048576)} MB, ${replay.rss_per_stream_bytes} B per stream (buffer, pending request and socket bookkeeping together).`,
    '',
    '| goal | target | measured | result |',
    '|---|---|---|---|',
    ...goals.map((g) => `| ${g.goal} | ${g.target} | ${g.measured} | ${g.pass ? 'PASS' : 'FAIL'} |`)
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  const file = writeResults('streams', startedAt, { startedAt, machine, resume, cancel, cancelEcho, paced, bursts: { resume: resumed, cancel: { sentOverMs: herd.sentOverMs, gatewayCpuUsPerOp: herd.gatewayCpuUsPerOp } }, replay, goals, loadBefore, loadAfter })
  log(`${TAG}: results in ${file}`)
  await stopGateway()
  await run.cleanUp()
  run.disarm()
  return common.strict && goals.some((g) => !g.pass) ? 1 : 0
}

run.exitWith(main, { exitAtOnce: true })
