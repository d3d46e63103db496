/**
 * `npm run chaos:recovery`: how long users wait after the broker is back (the workers issue,
 * "Recovery time after the broker returns"). One long-running gateway (relay mode: the
 * broker link is what is measured), a private Mosquitto, the echo worker, and chats at a fixed
 * rate; then CHAOS_CYCLES cycles of two faults each:
 *
 * - kill: the broker SIGKILLed, CHAOS_DOWN_MS down, started again on the same port;
 * - freeze: the broker SIGSTOPped for CHAOS_FREEZE_MS (a half-open link), then SIGCONT.
 *
 * Measured per fault: from the broker answering again (a probe client's CONNACK after the
 * restart; the SIGCONT for a freeze) to the first chat answered 200. Also the gateway's connect
 * attempts per second while the broker was away (tether_mqtt_connect_attempts_total). Loopback
 * only; every wait is bounded (CHAOS_RECOVERY_TIMEOUT_MS per fault, BENCH_MAX_SECONDS overall).
 *
 * The worker reconnects every 100 ms (ECHO_RECONNECT_MS), so the figure is the gateway's.
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createBenchDatabase } from '../lib/database.js'
import { TOPIC_PREFIX, startRelayGateway } from '../lib/gateway.js'
import { loadAverage1m, machineInfo } from '../lib/machine-info.js'
import { metric } from '../lib/metrics.js'
import { mosquittoVersion, startMosquitto } from '../lib/mosquitto.js'
import { connectNoDelay, endClient } from '../lib/mqtt-socket.js'
import { sleep, start, type Started } from '../lib/proc.js'
import { writeResults } from '../lib/results.js'
import { createRun, log } from '../lib/run.js'
import { commandLine, envReader, readCommonSettings } from '../lib/settings.js'
import { startWorker } from '../lib/worker.js'

const TAG = 'chaos:recovery'
const r = envReader(TAG)
const common = readCommonSettings(r, { fallback: 1800, min: 60 })
const CYCLES = r.int('CHAOS_CYCLES', 10, 1, 50)
const DOWN_MS = r.int('CHAOS_DOWN_MS', 5000, 100, 120_000)
const FREEZE_MS = r.int('CHAOS_FREEZE_MS', 20_000, 100, 300_000)
const RATE = r.int('CHAOS_RATE', 20, 1, 500)
const RECOVERY_TIMEOUT_MS = r.int('CHAOS_RECOVERY_TIMEOUT_MS', 90_000, 1000, 600_000)
/** Quiet time after a recovery before the next fault. */
const SETTLE_MS = 2000

interface Answer { sentAt: number, endAt: number, status: number }
interface Fault { kind: 'kill' | 'freeze', cycle: number, recoveryMs: number | null, awayS: number, attempts: number }

const run = createRun(TAG)

/** Chats at RATE a second until stopped; every answer kept (bounded by the run's length). */
function startTraffic (port: number): { answers: Answer[], stop: () => Promise<void> } {
  const answers: Answer[] = []
  const inFlight = new Set<Promise<void>>()
  const timer = setInterval(() => {
    const sentAt = Date.now()
    const p = fetch(`http://127.0.0.1:${port}/api/chatbot/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ session_id: randomUUID(), content: 'ping' }),
      signal: AbortSignal.timeout(15_000)
    }).then(async (res) => { await res.arrayBuffer(); answers.push({ sentAt, endAt: Date.now(), status: res.status }) },
      () => { answers.push({ sentAt, endAt: Date.now(), status: 0 }) })
      .finally(() => { inFlight.delete(p) })
    inFlight.add(p)
  }, 1000 / RATE)
  return { answers, stop: async () => { clearInterval(timer); await Promise.all(inFlight) } }
}

/** The first moment the broker at `url` completes an MQTT connect (polled every 10 ms). */
async function brokerAnswers (url: string, timeoutMs: number): Promise<number> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      const c = await connectNoDelay({ url, clientIdPrefix: 'chaos-probe', connectTimeoutMs: 500 })
      const at = Date.now()
      await endClient(c)
      return at
    } catch {
      if (Date.now() > end) throw new Error(`the broker did not answer within ${timeoutMs} ms of its restart`)
      await sleep(10)
    }
  }
}

/** The end time of the first 200 answered after `since`, or null after the timeout. */
async function firstOkAfter (answers: Answer[], since: number): Promise<number | null> {
  const end = Date.now() + RECOVERY_TIMEOUT_MS
  for (;;) {
    const ok = answers.find((a) => a.status === 200 && a.endAt >= since)
    if (ok !== undefined) return ok.endAt
    if (Date.now() > end) return null
    await sleep(10)
  }
}

function quantile (values: number[], q: number): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? null
}

async function main (): Promise<number> {
  run.arm(common.maxSeconds)
  const startedAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), 'tether-chaos-recovery-'))
  run.defer(() => { rmSync(dir, { recursive: true, force: true }) })
  const loadBefore = loadAverage1m()
  const broker = await startMosquitto(dir, common.mosquittoBin)
  let brokerProc: Started = broker.proc
  run.defer(async () => { brokerProc.child.kill('SIGCONT'); brokerProc.child.kill('SIGKILL') })
  const database = await createBenchDatabase({ adminUrl: common.adminDatabaseUrl, namePrefix: 'tether_chaos_', applicationName: 'tether-chaos-recovery' })
  run.defer(async () => await database.drop())
  const worker = await startWorker({ url: broker.url, prefix: TOPIC_PREFIX, silent: false, chunks: 0, logFile: join(dir, 'worker.log'), reconnectPeriodMs: 100 })
  run.defer(async () => { await worker.stop() })
  const gateway = await startRelayGateway({ dir, mqttUrl: broker.url, databaseUrl: database.url, readyTimeoutMs: common.readyTimeoutMs, extra: { CHAT_TIMEOUT_MS: '10000' } })
  run.defer(async () => { await gateway.stop() })
  const traffic = startTraffic(gateway.port)
  run.defer(async () => { await traffic.stop() })
  if (await firstOkAfter(traffic.answers, Date.now()) === null) throw new Error('no chat answered 200 before the first fault')

  const faults: Fault[] = []
  const attempts = async (): Promise<number> => await metric(gateway.port, 'tether_mqtt_connect_attempts_total') ?? 0
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    // kill: SIGKILL, DOWN_MS away, the same config (and port) again.
    let before = await attempts()
    const killedAt = Date.now()
    brokerProc.child.kill('SIGKILL')
    await new Promise<void>((resolve) => { if (brokerProc.child.exitCode !== null || brokerProc.child.signalCode !== null) resolve(); else brokerProc.child.once('exit', () => { resolve() }) })
    await sleep(DOWN_MS)
    brokerProc = start(common.mosquittoBin, ['-c', broker.confFile], join(dir, `mosquitto-${cycle}.log`))
    const back = await brokerAnswers(broker.url, 10_000)
    let ok = await firstOkAfter(traffic.answers, back)
    faults.push({ kind: 'kill', cycle, recoveryMs: ok === null ? null : ok - back, awayS: (back - killedAt) / 1000, attempts: await attempts() - before })
    log(`${TAG}: cycle ${cycle} kill: first 200 ${ok === null ? 'never' : `${ok - back} ms`} after the broker answered`)
    await sleep(SETTLE_MS)

    // freeze: SIGSTOP for FREEZE_MS, then SIGCONT.
    before = await attempts()
    const frozenAt = Date.now()
    brokerProc.child.kill('SIGSTOP')
    await sleep(FREEZE_MS)
    brokerProc.child.kill('SIGCONT')
    const thawed = Date.now()
    ok = await firstOkAfter(traffic.answers, thawed)
    faults.push({ kind: 'freeze', cycle, recoveryMs: ok === null ? null : ok - thawed, awayS: (thawed - frozenAt) / 1000, attempts: await attempts() - before })
    log(`${TAG}: cycle ${cycle} freeze: first 200 ${ok === null ? 'never' : `${ok - thawed} ms`} after SIGCONT`)
    await sleep(SETTLE_MS)
  }
  await traffic.stop()
  const loadAfter = loadAverage1m()

  const summary = (kind: Fault['kind']): { p50: number | null, p90: number | null, max: number | null, never: number, attemptsPerS: number } => {
    const of = faults.filter((f) => f.kind === kind)
    const ms = of.flatMap((f) => f.recoveryMs === null ? [] : [f.recoveryMs])
    const away = of.reduce((s, f) => s + f.awayS, 0)
    return { p50: quantile(ms, 0.5), p90: quantile(ms, 0.9), max: ms.length === 0 ? null : Math.max(...ms), never: of.length - ms.length, attemptsPerS: away === 0 ? 0 : of.reduce((s, f) => s + f.attempts, 0) / away }
  }
  const kill = summary('kill')
  const freeze = summary('freeze')
  const all = faults.flatMap((f) => f.recoveryMs === null ? [] : [f.recoveryMs])
  const never = faults.filter((f) => f.recoveryMs === null).length
  const p90 = quantile(all, 0.9)
  const worst = all.length === 0 ? null : Math.max(...all)
  const fmt = (v: number | null): string => v === null ? '-' : String(Math.round(v))
  const goals = [
    { goal: `first 200 after the broker answers again, p90 over ${faults.length} faults`, target: '< 2000 ms', measured: `${fmt(p90)} ms`, pass: p90 !== null && p90 < 2000 && never === 0 },
    { goal: 'first 200 after the broker answers again, worst', target: '< 5000 ms', measured: `${fmt(worst)} ms`, pass: worst !== null && worst < 5000 && never === 0 }
  ]
  const machine = machineInfo(mosquittoVersion(common.mosquittoBin))
  const lines = [
    `### chaos:recovery — ${startedAt}`,
    '',
    `Command: \`${commandLine('chaos:recovery', ['CHAOS_CYCLES', 'CHAOS_DOWN_MS', 'CHAOS_FREEZE_MS', 'CHAOS_RATE', 'CHAOS_RECOVERY_TIMEOUT_MS'])}\``,
    '',
    `Machine: ${JSON.stringify(machine)}; load average ${loadBefore} at start, ${loadAfter} at end. ${CYCLES} cycles: broker SIGKILL, ${DOWN_MS} ms down, restart; broker SIGSTOP ${FREEZE_MS} ms, SIGCONT. Chats at ${RATE}/s.`,
    '',
    '| cycle | kill: first 200 after the broker answers (ms) | connect attempts while down | freeze: first 200 after SIGCONT (ms) | connect attempts while frozen |',
    '|---:|---:|---:|---:|---:|',
    ...Array.from({ length: CYCLES }, (_, i) => {
      const k = faults.find((f) => f.kind === 'kill' && f.cycle === i + 1)
      const f = faults.find((x) => x.kind === 'freeze' && x.cycle === i + 1)
      return `| ${i + 1} | ${k?.recoveryMs === null ? 'never' : fmt(k?.recoveryMs ?? null)} | ${k?.attempts ?? '-'} | ${f?.recoveryMs === null ? 'never' : fmt(f?.recoveryMs ?? null)} | ${f?.attempts ?? '-'} |`
    }),
    '',
    `kill: p50 ${fmt(kill.p50)} ms, p90 ${fmt(kill.p90)} ms, max ${fmt(kill.max)} ms, ${kill.attemptsPerS.toFixed(2)} connect attempts/s while away; freeze: p50 ${fmt(freeze.p50)} ms, p90 ${fmt(freeze.p90)} ms, max ${fmt(freeze.max)} ms, ${freeze.attemptsPerS.toFixed(2)} attempts/s while away.`,
    '',
    '| goal | target | measured | result |',
    '|---|---|---|---|',
    ...goals.map((g) => `| ${g.goal} | ${g.target} | ${g.measured} | ${g.pass ? 'PASS' : 'FAIL'} |`)
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  const file = writeResults('chaos-recovery', startedAt, { startedAt, machine, settings: { CYCLES, DOWN_MS, FREEZE_MS, RATE }, faults, kill, freeze, goals, loadBefore, loadAfter })
  log(`${TAG}: results in ${file}`)
  await run.cleanUp()
  run.disarm()
  return common.strict && goals.some((g) => !g.pass) ? 1 : 0
}

run.exitWith(main, { exitAtOnce: true })
