/**
 * `npm run chaos` and `npm run soak -- --minutes N`: the faults Tether exists to survive, one
 * phase each, against a real Mosquitto, a private PostgreSQL, a gateway (persistent chats) and
 * two announced echo workers, with chats at a fixed rate throughout:
 *
 *   baseline · broker SIGKILL + restart · broker SIGSTOP (half-open) + SIGCONT · worker SIGSTOP +
 *   SIGCONT · worker SIGKILL + restart · PostgreSQL restart · gateway SIGKILL + restart · cool-down
 *
 * Every chat is sent with a client timeout of CHAT_TIMEOUT_MS + 1 s: one without an answer by
 * then is "unanswered". Printed: per phase sent, 200, 503, 504, other (4xx, 500, a refused or
 * reset connection while the gateway is down), unanswered, p50 and max; then what is pending in
 * the gateway after the traffic stops. Exit 1 on any unanswered chat or anything left pending.
 *
 * The soak repeats the cycle for N minutes, without the gateway restart (it would reset the
 * memory being watched), and reports the gateway's RSS and heap after the first cycle and at
 * the end. Loopback only; every loop is bounded by its phase's length and BENCH_MAX_SECONDS.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startPrivatePostgres, type PrivatePostgres } from '../../test/fixtures/private-postgres.js'
import { createAccount } from '../lib/accounts.js'
import { LIMITS_LIFTED, TOPIC_PREFIX, linkEnv, startGateway, type Gateway } from '../lib/gateway.js'
import { loadAverage1m, machineInfo } from '../lib/machine-info.js'
import { parseMetrics, scrapeText } from '../lib/metrics.js'
import { mosquittoVersion, startMosquitto } from '../lib/mosquitto.js'
import { freePort, sleep, start, waitUntil, type Started } from '../lib/proc.js'
import { writeResults } from '../lib/results.js'
import { createRun, log } from '../lib/run.js'
import { commandLine, envReader, readCommonSettings } from '../lib/settings.js'
import { startWorker, type Worker } from '../lib/worker.js'

const minutesArg = process.argv.indexOf('--minutes')
const SOAK_MINUTES = minutesArg >= 0 ? Number(process.argv[minutesArg + 1]) : 0
if (minutesArg >= 0 && !(SOAK_MINUTES > 0 && SOAK_MINUTES <= 24 * 60)) {
  console.error('soak: --minutes must be a number of minutes, 1 to 1440')
  process.exit(78)
}
const SOAK = SOAK_MINUTES > 0
const TAG = SOAK ? 'soak' : 'chaos'
const r = envReader(TAG)
const common = readCommonSettings(r, { fallback: SOAK ? SOAK_MINUTES * 60 + 600 : 900, min: 60 })
const RATE = r.int('CHAOS_RATE', 20, 1, 500)
const PHASE_S = r.int('CHAOS_PHASE_SECONDS', 12, 4, 600)
const CHAT_TIMEOUT_MS = r.int('CHAOS_CHAT_TIMEOUT_MS', 10_000, 1000, 120_000)
/** How long each fault lasts inside its phase. */
const FAULT_MS = r.int('CHAOS_FAULT_MS', 4000, 500, 60_000)
const SESSIONS = 64
/** Soak: cycles before the memory baseline. */
const WARMUP_CYCLES = 3

interface Answer { phase: string, sentAt: number, ms: number | null, status: number }
type PhaseName = 'baseline' | 'broker kill' | 'broker freeze' | 'worker stop' | 'worker kill' | 'postgres restart' | 'gateway kill' | 'cool-down'

const run = createRun(TAG)

interface Rig {
  dir: string
  brokerProc: Started
  brokerConf: string
  brokerUrl: string
  postgres: PrivatePostgres
  workers: Worker[]
  gateway: Gateway
  port: number
  token: string
  sessions: string[]
  databaseUrl: string
  authSecret: string
}

function gatewayEnv (rig: Pick<Rig, 'brokerUrl' | 'databaseUrl' | 'dir' | 'authSecret'>, port: number): Record<string, string> {
  return {
    ...linkEnv({ port, mqttUrl: rig.brokerUrl, prefix: TOPIC_PREFIX, databaseUrl: rig.databaseUrl, dataDir: rig.dir, authSecret: rig.authSecret, chatMode: 'persistent' }),
    ...LIMITS_LIFTED,
    INSTANCE_ID: 'chaos-gateway',
    CHAT_TIMEOUT_MS: String(CHAT_TIMEOUT_MS),
    MQTT_BACKOFF_BASE_MS: '100',
    MQTT_CONNECT_TIMEOUT_MS: '1000',
    MQTT_KEEPALIVE_S: '2',
    MQTT_PROBE_TIMEOUT_MS: '1000'
  }
}

async function startEcho (rig: Pick<Rig, 'dir' | 'brokerUrl'>, id: string): Promise<Worker> {
  return await startWorker({ url: rig.brokerUrl, prefix: TOPIC_PREFIX, silent: false, chunks: 2, holdMs: 50, logFile: join(rig.dir, `${id}.log`), announceAs: id, reconnectPeriodMs: 100, heartbeatMs: 500 })
}

/** Chats at RATE a second, each on the next session, until stopped. */
function startTraffic (rig: Rig, phaseOf: () => string): { answers: Answer[], stop: () => Promise<void> } {
  const answers: Answer[] = []
  const inFlight = new Set<Promise<void>>()
  let n = 0
  const timer = setInterval(() => {
    const sentAt = Date.now()
    const phase = phaseOf()
    const session = rig.sessions[n++ % rig.sessions.length] as string
    const p = fetch(`http://127.0.0.1:${rig.port}/api/chatbot/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${rig.token}` },
      body: JSON.stringify({ session_id: session, content: `chaos ${n}` }),
      signal: AbortSignal.timeout(CHAT_TIMEOUT_MS + 1000)
    }).then(async (res) => { await res.arrayBuffer(); answers.push({ phase, sentAt, ms: Date.now() - sentAt, status: res.status }) },
      (err: unknown) => {
        const timedOut = (err as Error).name === 'TimeoutError'
        answers.push({ phase, sentAt, ms: timedOut ? null : Date.now() - sentAt, status: 0 })
      })
      .finally(() => { inFlight.delete(p) })
    inFlight.add(p)
  }, 1000 / RATE)
  return { answers, stop: async () => { clearInterval(timer); await Promise.all(inFlight) } }
}

async function waitExit (proc: Started): Promise<void> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return
  await new Promise<void>((resolve) => { proc.child.once('exit', () => { resolve() }) })
}

/** Runs `fault` FAULT_MS into a phase of PHASE_S seconds, so each phase has a before and an after. */
async function phase (name: PhaseName, setPhase: (p: string) => void, fault?: () => Promise<void>): Promise<void> {
  setPhase(name)
  const end = Date.now() + PHASE_S * 1000
  log(`${TAG}: phase ${name}`)
  if (fault !== undefined) {
    await sleep(Math.min(2000, PHASE_S * 250))
    await fault()
  }
  const left = end - Date.now()
  if (left > 0) await sleep(left)
}

async function memory (port: number): Promise<{ rss: number, heap: number } | null> {
  try {
    const m = parseMetrics(await scrapeText(port))
    return { rss: m.get('process_resident_memory_bytes') ?? 0, heap: m.get('nodejs_heap_size_used_bytes') ?? 0 }
  } catch { return null }
}

async function main (): Promise<number> {
  run.arm(common.maxSeconds)
  const startedAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), `tether-${TAG}-`))
  run.defer(() => { rmSync(dir, { recursive: true, force: true }) })
  const broker = await startMosquitto(dir, common.mosquittoBin)
  const postgres = await startPrivatePostgres()
  run.defer(async () => { await postgres.stop() })
  const partial = { dir, brokerUrl: broker.url, databaseUrl: postgres.url, authSecret: randomBytes(32).toString('hex') }
  const workers = [await startEcho(partial, 'chaos-worker-a'), await startEcho(partial, 'chaos-worker-b')]
  const port = await freePort()
  const launch = async (): Promise<Gateway> => await startGateway({ label: 'chaos', port, logFile: join(dir, `gateway-${Date.now()}.log`), readyTimeoutMs: common.readyTimeoutMs, env: (p) => gatewayEnv(partial, p) })
  const rig: Rig = { ...partial, brokerProc: broker.proc, brokerConf: broker.confFile, postgres, workers, gateway: await launch(), port, token: '', sessions: [] }
  run.defer(async () => { rig.brokerProc.child.kill('SIGCONT'); rig.brokerProc.child.kill('SIGKILL') })
  run.defer(async () => { for (const w of rig.workers) { w.proc.child.kill('SIGCONT'); await w.stop() } })
  run.defer(async () => { await rig.gateway.stop() })
  const account = await createAccount(port, { username: `chaos_${randomBytes(4).toString('hex')}`, sessions: SESSIONS, sessionTitle: (i) => `chaos ${i}` })
  rig.token = account.token
  rig.sessions = account.sessionIds
  await waitUntil(async () => (parseMetrics(await scrapeText(port)).get('tether_workers_capacity') ?? 0) > 0, 10_000)

  let current = 'baseline'
  const traffic = startTraffic(rig, () => current)
  const setPhase = (p: string): void => { current = p }
  const faults: Record<Exclude<PhaseName, 'baseline' | 'cool-down'>, () => Promise<void>> = {
    'broker kill': async () => {
      rig.brokerProc.child.kill('SIGKILL')
      await waitExit(rig.brokerProc)
      await sleep(FAULT_MS)
      rig.brokerProc = start(common.mosquittoBin, ['-c', rig.brokerConf], join(dir, `mosquitto-${Date.now()}.log`))
    },
    'broker freeze': async () => {
      rig.brokerProc.child.kill('SIGSTOP')
      await sleep(FAULT_MS)
      rig.brokerProc.child.kill('SIGCONT')
    },
    'worker stop': async () => {
      const w = rig.workers[0] as Worker
      w.proc.child.kill('SIGSTOP')
      await sleep(FAULT_MS)
      w.proc.child.kill('SIGCONT')
    },
    'worker kill': async () => {
      const w = rig.workers[1] as Worker
      w.proc.child.kill('SIGKILL')
      await waitExit(w.proc)
      await sleep(FAULT_MS / 2)
      rig.workers[1] = await startEcho(rig, 'chaos-worker-b')
    },
    'postgres restart': async () => {
      await rig.postgres.crash()
      await sleep(FAULT_MS / 2)
      await rig.postgres.restart()
    },
    'gateway kill': async () => {
      rig.gateway.proc.child.kill('SIGKILL')
      await waitExit(rig.gateway.proc)
      rig.gateway = await launch()
    }
  }
  const cycle: PhaseName[] = ['broker kill', 'broker freeze', 'worker stop', 'worker kill', 'postgres restart', ...(SOAK ? [] : ['gateway kill' as const])]
  // The soak's baseline is taken after WARMUP_CYCLES: the first cycles grow the heap, the JIT's
  // code and the pools to their working size, which is not drift.
  let firstMemory: { rss: number, heap: number } | null = null
  const series: Array<{ cycle: number, rss: number, heap: number }> = []
  let cycles = 0
  const soakEnd = Date.now() + SOAK_MINUTES * 60_000
  await phase('baseline', setPhase)
  do {
    for (const name of cycle) await phase(name, setPhase, faults[name as keyof typeof faults])
    cycles++
    const m = await memory(port)
    if (m !== null) series.push({ cycle: cycles, ...m })
    if (firstMemory === null && cycles >= (SOAK ? WARMUP_CYCLES : 1)) firstMemory = m
  } while (SOAK && Date.now() < soakEnd)
  await phase('cool-down', setPhase)
  await traffic.stop()
  // Whatever is still in flight has had its deadline and more by now.
  await sleep(1000)
  const after = parseMetrics(await scrapeText(port))
  const pendingAfter = after.get('tether_chat_pending_requests') ?? -1
  const streamsAfter = after.get('tether_streams') ?? 0
  const lastMemory = await memory(port)

  const names = ['baseline', ...new Set(cycle), 'cool-down']
  const q = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] ?? 0 }
  const rows = names.map((name) => {
    const of = traffic.answers.filter((a) => a.phase === name)
    const ms = of.flatMap((a) => a.ms === null ? [] : [a.ms])
    const count = (pred: (a: Answer) => boolean): number => of.filter(pred).length
    return {
      phase: name,
      sent: of.length,
      ok: count((a) => a.status === 200),
      s503: count((a) => a.status === 503),
      s504: count((a) => a.status === 504),
      other: count((a) => a.ms !== null && a.status !== 200 && a.status !== 503 && a.status !== 504),
      unanswered: count((a) => a.ms === null),
      p50: ms.length === 0 ? 0 : q(ms, 0.5),
      max: ms.length === 0 ? 0 : Math.max(...ms)
    }
  })
  const unanswered = rows.reduce((s, row) => s + row.unanswered, 0)
  const sent = rows.reduce((s, row) => s + row.sent, 0)
  const drift = firstMemory !== null && lastMemory !== null && firstMemory.rss > 0 ? (lastMemory.rss - firstMemory.rss) / firstMemory.rss : null
  const heapDrift = firstMemory !== null && lastMemory !== null && firstMemory.heap > 0 ? (lastMemory.heap - firstMemory.heap) / firstMemory.heap : null
  const mb = (b: number | undefined): string => b === undefined ? '-' : `${(b / 1048576).toFixed(1)} MB`
  const pct = (x: number | null): string => x === null ? '-' : `${(100 * x).toFixed(1)} %`
  const machine = machineInfo(mosquittoVersion(common.mosquittoBin))
  const lines = [
    `### ${TAG} — ${startedAt}`,
    '',
    `Command: \`${commandLine(TAG, ['CHAOS_RATE', 'CHAOS_PHASE_SECONDS', 'CHAOS_CHAT_TIMEOUT_MS', 'CHAOS_FAULT_MS'])}${SOAK ? ` -- --minutes ${SOAK_MINUTES}` : ''}\``,
    '',
    `Machine: ${JSON.stringify(machine)}; load average ${loadAverage1m()} at end. ${RATE} chats/s (persistent, 2 announced echo workers), phases of ${PHASE_S} s, faults of ${FAULT_MS} ms, CHAT_TIMEOUT_MS ${CHAT_TIMEOUT_MS}; ${cycles} cycle(s).`,
    '',
    '| phase | sent | 200 | 503 | 504 | other | unanswered | p50 ms | max ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((row) => `| ${row.phase} | ${row.sent} | ${row.ok} | ${row.s503} | ${row.s504} | ${row.other} | ${row.unanswered} | ${row.p50} | ${row.max} |`),
    '',
    `Sent ${sent}, unanswered ${unanswered}; after the run: ${pendingAfter} pending, ${streamsAfter} streams kept.` +
      (SOAK ? ` Gateway after ${WARMUP_CYCLES} warm-up cycles: RSS ${mb(firstMemory?.rss)}, heap ${mb(firstMemory?.heap)}; at the end: RSS ${mb(lastMemory?.rss)} (${pct(drift)}), heap ${mb(lastMemory?.heap)} (${pct(heapDrift)}). RSS after each cycle (MB): ${series.map((x) => (x.rss / 1048576).toFixed(0)).join(', ')}.` : '')
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  const file = writeResults(TAG, startedAt, { startedAt, machine, settings: { RATE, PHASE_S, CHAT_TIMEOUT_MS, FAULT_MS, SOAK_MINUTES }, cycles, rows, pendingAfter, firstMemory, lastMemory, drift, heapDrift, series })
  log(`${TAG}: results in ${file}`)
  await run.cleanUp()
  run.disarm()
  return unanswered > 0 || pendingAfter !== 0 ? 1 : 0
}

run.exitWith(main, { exitAtOnce: true })
