/**
 * The gateway as every bench family starts it: `node <BENCH_GATEWAY_DIR or dist/src>/main.js` as
 * a child process with an environment the family builds, ready once GET /readyz answers 200,
 * stopped with SIGTERM and then SIGKILL after 15 s. What the families' environments share (the
 * broker and database links, and the per-user limits lifted) is built here, once.
 */
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, start, stop, isRunning, sleep, type Started } from './proc.js'

/** The MQTT topic prefix of every bench gateway, echo worker and load client. */
export const TOPIC_PREFIX = 'llm'

/**
 * The compiled gateway: dist/src of this build (bench code runs from dist/bench/lib/), or
 * BENCH_GATEWAY_DIR to measure another build (say, a checkout of the previous release).
 */
export function gatewayDir (): string {
  return resolve(process.env.BENCH_GATEWAY_DIR ?? fileURLToPath(new URL('../../src/', import.meta.url)))
}

export function gatewayFile (name: 'main.js' | 'app.js' | 'config.js'): string {
  return join(gatewayDir(), name)
}

export function missingGateway (files: readonly string[]): string | undefined {
  const missing = files.filter((f) => !existsSync(f))
  if (missing.length === 0) return undefined
  return `gateway not built: ${missing.join(', ')} missing (is src/ written yet, and did "npm run build" succeed?)`
}

async function isReady (port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1000) })
  await res.arrayBuffer()
  return res.status === 200
}

/** Polls GET /readyz every 100 ms; false at the timeout or as soon as the process is gone. */
export async function waitReady (port: number, timeoutMs: number, alive: () => boolean): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (!alive()) return false
    try { if (await isReady(port)) return alive() } catch { /* not listening yet */ }
    await sleep(100)
  }
  return false
}

export interface LinkOptions {
  readonly port: number
  readonly mqttUrl: string
  readonly prefix: string
  readonly databaseUrl: string
  /** Where the gateway may write (auth secret, embedded server): a temp dir, never the repo. */
  readonly dataDir: string
  readonly authSecret: string
  /** CHAT_MODE; unset keeps the gateway's default (persistent). */
  readonly chatMode?: 'relay' | 'persistent'
}

/** Where the gateway listens, which broker and database it uses, and how it signs tokens. */
export function linkEnv (o: LinkOptions): Record<string, string> {
  return {
    PORT: String(o.port),
    HOST: '127.0.0.1',
    MQTT_URL: o.mqttUrl,
    MQTT_TOPIC_PREFIX: o.prefix,
    LOG_LEVEL: 'warn',
    ...(o.chatMode === undefined ? {} : { CHAT_MODE: o.chatMode }),
    DATABASE_URL: o.databaseUrl,
    DATA_DIR: o.dataDir,
    AUTH_SECRET: o.authSecret
  }
}

/** Limits that must never be what a bench measures; every family's gateway gets them. */
export const LIMITS_LIFTED: Readonly<Record<string, string>> = {
  // One bench user drives the whole load: the per-user fair-share limits (docs/operations.md,
  // "Security") must not be what is measured.
  MAX_PENDING_PER_USER: '1000000',
  SESSION_CREATE_PER_MINUTE: '1000000',
  WS_MAX_PER_USER: '1000000',
  REGISTER_PER_ADDRESS_PER_HOUR: '1000000',
  REGISTER_MAX_CONCURRENT: '100000',
  MAX_PENDING: '20000',
  // The config's maximum: the per-session cap (default 4) must never be what the bench measures.
  MAX_PENDING_PER_SESSION: '10000',
  CHAT_TIMEOUT_MS: '30000'
}

/**
 * Our variables that would change what is measured if inherited from the caller's shell (the
 * names of src/config.ts, and WORKER_* that THREAD* replaced).
 */
const GATEWAY_VARS = /^(MQTT|CHAT|MAX|EMBEDDED|SHUTDOWN|CORS|DEMO|TETHER|DB|AUTH|LOGIN|HISTORY|THREAD|WORKER|WATCHDOG|EVENT|MEMORY|CONTENT|WS|HINT|SESSION|REGISTER|PASSWORD|SSE|TRUST|STREAM)_|^(PORT|HOST|DATABASE_URL|DATA_DIR|LOG_LEVEL|INSTANCE_ID|NODE_ENV|THREADS)$/

export interface GatewayOptions {
  /** Names the gateway in errors: its chat mode or bench mode. */
  readonly label?: string
  /** The gateway's own variables for the port it gets (the caller's shell minus ours comes first). */
  readonly env: (port: number) => Record<string, string>
  readonly logFile: string
  readonly readyTimeoutMs: number
  /** Node flags before main.js, e.g. `--cpu-prof` (BENCH_GATEWAY_NODE_ARGS) or `--inspect=127.0.0.1:0`. */
  readonly nodeArgs?: readonly string[]
  /** A fixed port (a restart on the port its clients know); default a free one. */
  readonly port?: number
}

export interface Gateway {
  readonly port: number
  readonly proc: Started
  /** The variables the family set (not the inherited ones). */
  readonly env: Record<string, string>
  /** Date.now() when GET /readyz first answered 200. */
  readonly readyAt: number
  /** SIGTERM, then SIGKILL after 15 s; how the process ended. */
  stop: () => Promise<{ code: number | null, signal: string | null }>
}

export async function startGateway (o: GatewayOptions): Promise<Gateway> {
  const mainJs = gatewayFile('main.js')
  const missing = missingGateway([mainJs])
  if (missing !== undefined) throw new Error(missing)
  const port = o.port ?? await freePort()
  const env = o.env(port)
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !GATEWAY_VARS.test(k)))
  const args = [...(o.nodeArgs ?? []), mainJs]
  const proc = start(process.execPath, args, o.logFile, { env: { ...inherited, ...env } })
  if (!await waitReady(port, o.readyTimeoutMs, () => isRunning(proc.child))) {
    const why = isRunning(proc.child) ? `GET /readyz not 200 within ${o.readyTimeoutMs} ms` : `exited with code ${proc.child.exitCode}`
    await stop(proc.child)
    throw new Error(`gateway${o.label === undefined ? '' : ` ${o.label}`} (node ${args.join(' ')}) ${why}; its output:\n${proc.tail(30)}`)
  }
  return {
    port,
    proc,
    env,
    readyAt: Date.now(),
    stop: async () => {
      await stop(proc.child, 15_000)
      return { code: proc.child.exitCode, signal: proc.child.signalCode }
    }
  }
}

/**
 * A relay-mode gateway (no accounts, nothing stored) on a private broker, as the chaos scripts
 * use it: the link is what they measure. `extra` is laid over the shared limits.
 */
export async function startRelayGateway (o: { dir: string, mqttUrl: string, databaseUrl: string, readyTimeoutMs: number, extra: Record<string, string> }): Promise<Gateway> {
  return await startGateway({
    label: 'relay',
    logFile: join(o.dir, 'gateway.log'),
    readyTimeoutMs: o.readyTimeoutMs,
    env: (port) => ({
      ...linkEnv({ port, mqttUrl: o.mqttUrl, prefix: TOPIC_PREFIX, databaseUrl: o.databaseUrl, dataDir: o.dir, authSecret: randomBytes(32).toString('hex'), chatMode: 'relay' }),
      ...LIMITS_LIFTED,
      ...o.extra
    })
  })
}
