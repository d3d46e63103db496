/**
 * The gateway of bench:loop: `node dist/src/main.js` as a child process, with the settings
 * that make the blocking work of a login storm and of long histories happen, and with
 * WORKER_INLINE on or off. Readiness is GET /readyz 200 (bench/lib/gateway.ts).
 */
import { MAIN_JS, missingGateway, waitReady } from './gateway.js'
import { freePort, isRunning, start, stop, type Started } from './proc.js'

export type LoopMode = 'pool' | 'inline'

export interface LoopGatewayOptions {
  readonly mode: LoopMode
  readonly mqttUrl: string
  readonly prefix: string
  readonly databaseUrl: string
  readonly dataDir: string
  readonly authSecret: string
  readonly logFile: string
  readonly readyTimeoutMs: number
  readonly historyMaxMessages: number
  readonly historyMaxTokens: number
  /** Unset keeps the gateway's defaults (cores - 1, at most 4; 32; 5000 ms; nice 10). */
  readonly workerThreads?: number
  readonly workerMaxQueue?: number
  readonly workerTaskTimeoutMs?: number
  readonly workerNice?: number
  /** Extra node flags for the gateway, e.g. `--cpu-prof` to see where its loop goes. */
  readonly nodeArgs?: readonly string[]
}

export interface LoopGateway {
  readonly port: number
  readonly proc: Started
  /** Date.now() when GET /readyz first answered 200: the lag monitor started just before. */
  readonly readyAt: number
  stop: () => Promise<void>
}

/** Our variables that would change what is measured if inherited from the caller's shell. */
const GATEWAY_VARS = /^(MQTT|CHAT|MAX|EMBEDDED|SHUTDOWN|CORS|DEMO|TETHER|DB|AUTH|LOGIN|HISTORY|WORKER|WATCHDOG|EVENT|MEMORY|CONTENT|WS|HINT|SESSION|REGISTER|PASSWORD|SSE|TRUST)_|^(PORT|HOST|DATABASE_URL|DATA_DIR|LOG_LEVEL|INSTANCE_ID|NODE_ENV)$/

export function loopGatewayEnv (o: LoopGatewayOptions, port: number): Record<string, string> {
  const optional = (name: string, v: number | undefined): Record<string, string> => v === undefined ? {} : { [name]: String(v) }
  return {
    PORT: String(port),
    HOST: '127.0.0.1',
    MQTT_URL: o.mqttUrl,
    MQTT_TOPIC_PREFIX: o.prefix,
    LOG_LEVEL: 'warn',
    DATABASE_URL: o.databaseUrl,
    DATA_DIR: o.dataDir,
    AUTH_SECRET: o.authSecret,
    // Every login of the storm uses a correct password, but the limiter counts an attempt as a
    // failure until it succeeds, and all of them come from one address: the config's maximum
    // keeps 429 out of what is measured.
    LOGIN_MAX_FAILURES: '100000',
    // The scrypt cost every earlier bench:loop figure was measured at (2^14). The gateway's
    // default is now 2^17, eight times the work per hash: BENCH_PASSWORD_HASH_COST=17 measures
    // that (the storm then saturates the threads at a few dozen logins per second).
    PASSWORD_HASH_COST: process.env.BENCH_PASSWORD_HASH_COST ?? '14',
    // One bench user drives the whole load: the per-user fair-share limits (docs/operations.md,
    // "Security") must not be what is measured.
    MAX_PENDING_PER_USER: '1000000',
    SESSION_CREATE_PER_MINUTE: '1000000',
    WS_MAX_PER_USER: '1000000',
    REGISTER_PER_ADDRESS_PER_HOUR: '1000000',
    REGISTER_MAX_CONCURRENT: '100000',
    MAX_PENDING: '20000',
    MAX_PENDING_PER_SESSION: '10000',
    CHAT_TIMEOUT_MS: '30000',
    // Long histories reach the token counter whole: the character budget is far above them,
    // so HISTORY_MAX_TOKENS is what trims (on a worker thread, or inline).
    HISTORY_MAX_MESSAGES: String(o.historyMaxMessages),
    HISTORY_MAX_CHARS: '10000000',
    HISTORY_MAX_TOKENS: String(o.historyMaxTokens),
    WORKER_INLINE: o.mode === 'inline' ? '1' : '0',
    ...optional('WORKER_THREADS', o.workerThreads),
    ...optional('WORKER_MAX_QUEUE', o.workerMaxQueue),
    ...optional('WORKER_TASK_TIMEOUT_MS', o.workerTaskTimeoutMs),
    ...optional('WORKER_NICE', o.workerNice)
  }
}

export async function startLoopGateway (o: LoopGatewayOptions): Promise<LoopGateway> {
  const missing = missingGateway([MAIN_JS])
  if (missing !== undefined) throw new Error(missing)
  const port = await freePort()
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !GATEWAY_VARS.test(k)))
  const proc = start(process.execPath, [...(o.nodeArgs ?? []), MAIN_JS], o.logFile, { env: { ...inherited, ...loopGatewayEnv(o, port) } })
  const ready = await waitReady(port, o.readyTimeoutMs, () => isRunning(proc.child))
  if (!ready) {
    const why = isRunning(proc.child) ? `GET /readyz not 200 within ${o.readyTimeoutMs} ms` : `exited with code ${proc.child.exitCode}`
    await stop(proc.child)
    throw new Error(`gateway (${o.mode}) ${why}; its output:\n${proc.tail(30)}`)
  }
  return { port, proc, readyAt: Date.now(), stop: async () => { await stop(proc.child, 15_000) } }
}
