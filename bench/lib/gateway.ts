/**
 * The gateway as the bench sees it from outside: a child process (`node dist/src/main.js`)
 * reached over HTTP, with readiness and Prometheus scraping.
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, start, stop, isRunning, sleep, type Started } from './proc.js'

/**
 * The compiled gateway: dist/src of this build (bench code runs from dist/bench/lib/), or
 * BENCH_GATEWAY_DIR to measure another build (say, a checkout of the previous release).
 */
export const GATEWAY_DIR = resolve(process.env.BENCH_GATEWAY_DIR ?? fileURLToPath(new URL('../../src/', import.meta.url)))
export const MAIN_JS = join(GATEWAY_DIR, 'main.js')
export const APP_JS = join(GATEWAY_DIR, 'app.js')
export const CONFIG_JS = join(GATEWAY_DIR, 'config.js')

export function missingGateway (files: readonly string[]): string | undefined {
  const missing = files.filter((f) => !existsSync(f))
  if (missing.length === 0) return undefined
  return `gateway not built: ${missing.join(', ')} missing (is src/ written yet, and did "npm run build" succeed?)`
}

export interface Gateway {
  readonly port: number
  readonly proc: Started
  stop: () => Promise<void>
}

export async function isReady (port: number): Promise<boolean> {
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

export type ChatMode = 'relay' | 'persistent'

export interface GatewayOptions {
  readonly mqttUrl: string
  readonly prefix: string
  readonly logFile: string
  readonly readyTimeoutMs: number
  /** relay: no token, nothing stored; persistent: Bearer token, owned sessions, both turns stored. */
  readonly chatMode: ChatMode
  readonly databaseUrl: string
  /** Where the gateway may write (auth secret, embedded server): a temp dir, never the repo. */
  readonly dataDir: string
  readonly authSecret: string
  /** DB_POOL_SIZE; undefined keeps the gateway's default. */
  readonly dbPoolSize?: number
  /** Extra node flags for the gateway (BENCH_GATEWAY_NODE_ARGS), e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[]
}

/**
 * The environment both gateway kinds share (the child process and the in-process heap
 * gateway), so relay and persistent differ in CHAT_MODE only. Pool size, history limits and
 * timeouts stay at the gateway's defaults unless named here.
 */
export function gatewayEnv (o: Omit<GatewayOptions, 'logFile' | 'readyTimeoutMs'>, port: number): Record<string, string> {
  return {
    PORT: String(port),
    HOST: '127.0.0.1',
    MQTT_URL: o.mqttUrl,
    MQTT_TOPIC_PREFIX: o.prefix,
    LOG_LEVEL: 'warn',
    // One bench user drives the whole load: the per-user fair-share limits (docs/operations.md,
    // "Security") must not be what is measured.
    MAX_PENDING_PER_USER: '1000000',
    SESSION_CREATE_PER_MINUTE: '1000000',
    WS_MAX_PER_USER: '1000000',
    REGISTER_PER_ADDRESS_PER_HOUR: '1000000',
    REGISTER_MAX_CONCURRENT: '100000',
    MAX_PENDING: '20000',
    // The config's maximum: the per-session cap must never be what the bench measures.
    MAX_PENDING_PER_SESSION: '10000',
    CHAT_TIMEOUT_MS: '30000',
    CHAT_MODE: o.chatMode,
    DATABASE_URL: o.databaseUrl,
    DATA_DIR: o.dataDir,
    AUTH_SECRET: o.authSecret,
    ...(o.dbPoolSize === undefined ? {} : { DB_POOL_SIZE: String(o.dbPoolSize) })
  }
}

/** Our variables that would change what is measured if inherited from the caller's shell. */
const GATEWAY_VARS = /^(MQTT|CHAT|MAX|EMBEDDED|SHUTDOWN|CORS|DEMO|TETHER|DB|AUTH|LOGIN|HISTORY|WORKER|HINT|SESSION|REGISTER|PASSWORD|SSE|TRUST)_|^(PORT|HOST|DATABASE_URL|DATA_DIR|LOG_LEVEL|INSTANCE_ID|NODE_ENV)$/

export async function startGateway (o: GatewayOptions): Promise<Gateway> {
  const missing = missingGateway([MAIN_JS])
  if (missing !== undefined) throw new Error(missing)
  const port = await freePort()
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !GATEWAY_VARS.test(k)))
  const env = { ...inherited, ...gatewayEnv(o, port) }
  const proc = start(process.execPath, [...(o.nodeArgs ?? []), MAIN_JS], o.logFile, { env })
  const ready = await waitReady(port, o.readyTimeoutMs, () => isRunning(proc.child))
  if (!ready) {
    const why = isRunning(proc.child) ? `GET /readyz not 200 within ${o.readyTimeoutMs} ms` : `exited with code ${proc.child.exitCode}`
    await stop(proc.child)
    throw new Error(`gateway ${o.chatMode} (node ${MAIN_JS}) ${why}; its output:\n${proc.tail(30)}`)
  }
  return { port, proc, stop: async () => { await stop(proc.child, 15_000) } }
}

/** Prometheus text -> sum of the samples of each metric name (labels folded together). */
export function parseMetrics (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m === null) continue
    const value = Number(m[3])
    if (!Number.isFinite(value)) continue
    const name = m[1] as string
    out.set(name, (out.get(name) ?? 0) + value)
  }
  return out
}

export async function scrapeText (port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(3000) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`)
  return text
}

export async function scrape (port: number): Promise<Map<string, number>> {
  return parseMetrics(await scrapeText(port))
}

/** Sample lines (labels kept, histogram buckets left out) whose name starts with `prefix`. */
export function samplesOf (text: string, prefix: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(prefix) && !/_bucket[{ ]/.test(l))
}

/** Reads one metric; undefined when the scrape fails or the series does not exist. */
export async function metric (port: number, name: string): Promise<number | undefined> {
  try { return (await scrape(port)).get(name) } catch { return undefined }
}
