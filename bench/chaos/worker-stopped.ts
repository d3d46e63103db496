/**
 * `npm run chaos:worker-stopped`: what a frozen LLM worker costs its users (the workers issue,
 * "Worker stopped with the default deadline"). A gateway in relay mode with the default
 * CHAT_TIMEOUT_MS (90 s), a private Mosquitto, and the echo worker holding every chat
 * BENCH_HOLD_MS before answering; CHAOS_CHATS chats are sent, the worker is SIGSTOPped while it
 * holds them, and then CHAOS_NEW_CHATS more are sent. Measured: from the SIGSTOP to each held
 * chat's answer, and how long the new chats wait for theirs.
 *
 * CHAOS_PRESENCE=on (default): the worker announces itself (heartbeats every 1 s, the default),
 * the gateway uses presence. off: the worker is a v1 worker and WORKER_PRESENCE=off, which is
 * how every gateway behaved before presence: users wait for the deadline. Loopback only; every
 * wait is bounded (BENCH_MAX_SECONDS overall).
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createBenchDatabase } from '../lib/database.js'
import { TOPIC_PREFIX, startRelayGateway } from '../lib/gateway.js'
import { loadAverage1m, machineInfo } from '../lib/machine-info.js'
import { metric, parseSeries, scrapeText } from '../lib/metrics.js'
import { mosquittoVersion, startMosquitto } from '../lib/mosquitto.js'
import { sleep, waitUntil } from '../lib/proc.js'
import { writeResults } from '../lib/results.js'
import { createRun, log } from '../lib/run.js'
import { commandLine, envReader, readCommonSettings } from '../lib/settings.js'
import { startWorker } from '../lib/worker.js'

const TAG = 'chaos:worker-stopped'
const r = envReader(TAG)
const common = readCommonSettings(r, { fallback: 300, min: 30 })
const PRESENCE = r.choices('CHAOS_PRESENCE', 'on', ['on', 'off'])[0] as 'on' | 'off'
const CHATS = r.int('CHAOS_CHATS', 20, 1, 1000)
const NEW_CHATS = r.int('CHAOS_NEW_CHATS', 10, 0, 1000)
const HOLD_MS = r.int('BENCH_HOLD_MS', 600_000, 1000, 3_600_000)

interface Answer { status: number, error: string | null, endAt: number, sentAt: number }

const run = createRun(TAG)

async function chat (port: number, signal: AbortSignal): Promise<Answer> {
  const sentAt = Date.now()
  try {
    const res = await fetch(`http://127.0.0.1:${port}/api/chatbot/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ session_id: randomUUID(), content: 'hold on' }),
      signal
    })
    const body = await res.json().catch(() => ({})) as { error?: string }
    return { status: res.status, error: body.error ?? null, endAt: Date.now(), sentAt }
  } catch {
    return { status: 0, error: 'no answer', endAt: Date.now(), sentAt }
  }
}

function quantile (values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN
}

function tally (answers: Answer[]): string {
  const counts = new Map<string, number>()
  for (const a of answers) {
    const key = a.status === 200 ? '200' : `${a.status} ${a.error ?? ''}`.trim()
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return [...counts].map(([k, n]) => `${n} × ${k}`).join(', ')
}

async function main (): Promise<number> {
  run.arm(common.maxSeconds)
  const startedAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), 'tether-worker-stopped-'))
  run.defer(() => { rmSync(dir, { recursive: true, force: true }) })
  const broker = await startMosquitto(dir, common.mosquittoBin)
  run.defer(async () => { broker.proc.child.kill('SIGKILL') })
  const database = await createBenchDatabase({ adminUrl: common.adminDatabaseUrl, namePrefix: 'tether_stopped_', applicationName: 'tether-worker-stopped' })
  run.defer(async () => await database.drop())
  const worker = await startWorker({
    url: broker.url, prefix: TOPIC_PREFIX, silent: false, chunks: 0, logFile: join(dir, 'worker.log'), holdMs: HOLD_MS,
    ...(PRESENCE === 'on' ? { announceAs: 'bench-stopped' } : {})
  })
  run.defer(async () => { worker.proc.child.kill('SIGCONT'); await worker.stop() })
  const gateway = await startRelayGateway({
    dir,
    mqttUrl: broker.url,
    databaseUrl: database.url,
    readyTimeoutMs: common.readyTimeoutMs,
    // The gateway's default deadline, which the bench's shared limits lower to 30 s.
    extra: { CHAT_TIMEOUT_MS: '90000', WORKER_PRESENCE: PRESENCE === 'on' ? 'auto' : 'off' }
  })
  run.defer(async () => { await gateway.stop() })
  const online = async (): Promise<number> => parseSeries(await scrapeText(gateway.port))['tether_workers{state="online"}'] ?? 0
  if (PRESENCE === 'on' && !await waitUntil(async () => await online() === 1, 10_000)) {
    throw new Error('the announced worker never came online at the gateway')
  }
  const abort = new AbortController()
  run.defer(() => { abort.abort() })
  const held = Array.from({ length: CHATS }, async () => await chat(gateway.port, abort.signal))
  if (!await waitUntil(async () => (await metric(gateway.port, 'tether_chat_pending_requests') ?? 0) === CHATS, 10_000, 20)) {
    throw new Error('the chats never all reached the worker')
  }
  await sleep(200)
  const stoppedAt = Date.now()
  worker.proc.child.kill('SIGSTOP')
  log(`${TAG}: worker stopped with ${CHATS} chats in flight (presence ${PRESENCE})`)
  await sleep(PRESENCE === 'on' ? 3500 : 1000)
  // At once, like users: sent one after the other they would each wait out the deadline in turn.
  const fresh = await Promise.all(Array.from({ length: NEW_CHATS }, async () => await chat(gateway.port, abort.signal)))
  const answers = await Promise.all(held)
  const afterStop = answers.map((a) => a.endAt - stoppedAt)
  const freshMs = fresh.map((a) => a.endAt - a.sentAt)
  const machine = machineInfo(mosquittoVersion(common.mosquittoBin))
  const fmt = (ms: number): string => Number.isNaN(ms) ? '-' : `${Math.round(ms).toLocaleString('en-US')} ms`
  const lines = [
    `### chaos:worker-stopped (presence ${PRESENCE}) — ${startedAt}`,
    '',
    `Command: \`${commandLine('chaos:worker-stopped', ['CHAOS_PRESENCE', 'CHAOS_CHATS', 'CHAOS_NEW_CHATS', 'BENCH_HOLD_MS'])}\``,
    '',
    `Machine: ${JSON.stringify(machine)}; load average ${loadAverage1m()} at end. CHAT_TIMEOUT_MS default (90 s), heartbeat 1 s.`,
    '',
    '| chats | answers | SIGSTOP → answer p50 | max |',
    '|---|---|---:|---:|',
    `| ${CHATS} held by the stopped worker | ${tally(answers)} | ${fmt(quantile(afterStop, 0.5))} | ${fmt(Math.max(...afterStop))} |`,
    ...(NEW_CHATS > 0 ? [`| ${NEW_CHATS} sent after it stopped (${PRESENCE === 'on' ? '3.5' : '1'} s later) | ${tally(fresh)} | ${fmt(quantile(freshMs, 0.5))} (sent → answer) | ${fmt(Math.max(...freshMs))} |`] : [])
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  const file = writeResults('chaos-worker-stopped', startedAt, { startedAt, machine, presence: PRESENCE, answers, fresh, afterStop, freshMs })
  log(`${TAG}: results in ${file}`)
  await run.cleanUp()
  run.disarm()
  return 0
}

run.exitWith(main, { exitAtOnce: true })
