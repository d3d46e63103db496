/**
 * The settings of bench:ws, from the environment (the variables are listed in bench/ws.ts and
 * docs/benchmarks.md, "bench:ws"), and the descriptor check that must pass before anything starts.
 */
import { envReader, readCommonSettings, type CommonSettings } from '../lib/settings.js'

export type Phase = 'fixed' | 'steps' | 'chat'

export interface Settings extends CommonSettings {
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
  readonly forceGc: boolean
  readonly idleTimeoutS: number | undefined
  readonly keepTmp: boolean
}

export function readSettings (): Settings {
  const r = envReader('bench:ws')
  const sockets = r.int('BENCH_WS_SOCKETS', 10_000, 1, 100_000)
  const sessions = r.int('BENCH_WS_SESSIONS', 1000, 1, 10_000)
  if (sockets % sessions !== 0) r.fail(`BENCH_WS_SOCKETS (${sockets}) must be a multiple of BENCH_WS_SESSIONS (${sessions}): sockets are spread evenly`)
  const steps = r.ints('BENCH_WS_STEPS', '20000,30000,40000,50000,60000,80000,100000', { min: 1, max: 1_000_000, maxCount: 12, unit: 'deliveries/s' })
  return {
    ...readCommonSettings(r, { fallback: 480, min: 30 }),
    sockets,
    sessions,
    perSession: sockets / sessions,
    clientProcs: r.int('BENCH_WS_CLIENT_PROCS', 2, 1, 8),
    openConcurrency: r.int('BENCH_WS_OPEN_CONCURRENCY', 200, 1, 5000),
    idleS: r.number('BENCH_WS_IDLE_S', 3, 0, 60),
    hintRate: r.int('BENCH_WS_HINT_RATE', 1000, 1, 100_000),
    seconds: r.number('BENCH_WS_SECONDS', 10, 1, 120),
    steps: [...new Set(steps)].sort((a, b) => a - b),
    stepSeconds: r.number('BENCH_WS_STEP_SECONDS', 5, 1, 60),
    stepP99Ms: r.number('BENCH_WS_STEP_P99_MS', 100, 1, 10_000),
    qos: r.int('BENCH_WS_QOS', 1, 0, 1) as 0 | 1,
    phases: new Set(r.choices('BENCH_WS_PHASES', 'fixed,steps,chat', ['fixed', 'steps', 'chat'] as const)),
    chatSockets: r.int('BENCH_WS_CHAT_SOCKETS', 100, 1, 5000),
    chatRate: r.int('BENCH_WS_CHAT_RATE', 200, 1, 10_000),
    chatSeconds: r.number('BENCH_WS_CHAT_SECONDS', 10, 1, 120),
    echoChunks: r.int('ECHO_CHUNKS', 5, 0, 1000),
    forceGc: process.env.BENCH_WS_FORCE_GC !== '0',
    idleTimeoutS: r.optional('BENCH_WS_IDLE_TIMEOUT_S', 8, 960, true),
    keepTmp: process.env.BENCH_KEEP_TMP === '1'
  }
}

/**
 * File descriptors: the gateway holds one per socket (plus its pool, broker link and listener);
 * each client process one per socket it holds. Checked, never raised: raising limits is the
 * operator's call. Returns the problem, if any.
 */
export function fdLimitProblem (s: Settings, nofile: number | undefined): string | undefined {
  if (nofile === undefined) return undefined
  const gatewayNeeds = s.sockets + s.chatSockets + 512
  const clientNeeds = Math.ceil(s.sockets / s.clientProcs) + s.chatSockets + 256
  if (nofile >= Math.max(gatewayNeeds, clientNeeds)) return undefined
  return `ulimit -n is ${nofile}, too low for ${s.sockets} sockets: the gateway needs about ${gatewayNeeds} descriptors and each of the ` +
    `${s.clientProcs} client processes about ${clientNeeds}. Lower BENCH_WS_SOCKETS or raise the limit (ulimit -n) yourself.`
}
