/**
 * The gateway for bench:ws: `node dist/src/main.js` as a child process, persistent mode on the
 * run's own database, with the WebSocket limits raised so that the bench measures delivery and
 * not a limit; plus its RSS from /proc and its Prometheus series by label.
 */
import { readFileSync } from 'node:fs'
import { MAIN_JS, missingGateway, waitReady } from './gateway.js'
import { freePort, start, stop, isRunning, type Started } from './proc.js'
import { INSPECTOR_LINE, inspectorUrl } from './ws-inspector.js'

export interface WsGateway {
  readonly port: number
  readonly proc: Started
  readonly env: Record<string, string>
  /** The V8 inspector's WebSocket URL when started with `inspect` (for forced GCs). */
  readonly inspector: string | undefined
  stop: () => Promise<{ code: number | null, signal: string | null }>
}

/** Variables of ours that would change what is measured if inherited from the caller's shell. */
const GATEWAY_VARS = /^(MQTT|CHAT|MAX|EMBEDDED|SHUTDOWN|CORS|DEMO|TETHER|DB|AUTH|LOGIN|HISTORY|WORKER|WS|HINT|SESSION|REGISTER|PASSWORD|SSE|TRUST)_|^(PORT|HOST|DATABASE_URL|DATA_DIR|LOG_LEVEL|INSTANCE_ID|NODE_ENV)$/

export function wsGatewayEnv (o: { port: number, mqttUrl: string, prefix: string, databaseUrl: string, dataDir: string, authSecret: string, idleTimeoutS?: number }): Record<string, string> {
  return {
    // Only when asked (BENCH_WS_IDLE_TIMEOUT_S): it decides when uWS pings idle sockets.
    ...(o.idleTimeoutS !== undefined ? { WS_IDLE_TIMEOUT_S: String(o.idleTimeoutS) } : {}),
    PORT: String(o.port),
    HOST: '127.0.0.1',
    MQTT_URL: o.mqttUrl,
    MQTT_TOPIC_PREFIX: o.prefix,
    LOG_LEVEL: 'warn',
    CHAT_MODE: 'persistent',
    DATABASE_URL: o.databaseUrl,
    DATA_DIR: o.dataDir,
    AUTH_SECRET: o.authSecret,
    // 8 MiB per socket before the 4001 sweep (uWS's hard limit is twice that): a client that
    // lags for a moment at 100,000 deliveries/s must show up as latency, not as a close.
    WS_MAX_BACKPRESSURE: String(8 * 1024 * 1024),
    // One bench user drives the whole load: the per-user fair-share limits (docs/operations.md,
    // "Security") must not be what is measured.
    MAX_PENDING_PER_USER: '1000000',
    SESSION_CREATE_PER_MINUTE: '1000000',
    WS_MAX_PER_USER: '1000000',
    REGISTER_PER_ADDRESS_PER_HOUR: '1000000',
    REGISTER_MAX_CONCURRENT: '100000',
    MAX_PENDING: '20000',
    // The config's maximum: the per-session cap (default 4) must not be what the chat phase measures.
    MAX_PENDING_PER_SESSION: '10000',
    CHAT_TIMEOUT_MS: '30000'
  }
}

export async function startWsGateway (o: { mqttUrl: string, prefix: string, databaseUrl: string, dataDir: string, authSecret: string, logFile: string, readyTimeoutMs: number, inspect: boolean, idleTimeoutS?: number }): Promise<WsGateway> {
  const missing = missingGateway([MAIN_JS])
  if (missing !== undefined) throw new Error(missing)
  const port = await freePort()
  const env = wsGatewayEnv({ ...o, port })
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !GATEWAY_VARS.test(k)))
  // Loopback only, port chosen by the kernel: the inspector is there for forced GCs (ws-inspector.ts).
  const args = o.inspect ? ['--inspect=127.0.0.1:0', MAIN_JS] : [MAIN_JS]
  const proc = start(process.execPath, args, o.logFile, { env: { ...inherited, ...env } })
  if (!await waitReady(port, o.readyTimeoutMs, () => isRunning(proc.child))) {
    const why = isRunning(proc.child) ? `GET /readyz not 200 within ${o.readyTimeoutMs} ms` : `exited with code ${proc.child.exitCode}`
    await stop(proc.child)
    throw new Error(`gateway (node ${args.join(' ')}) ${why}; its output:\n${proc.tail(30)}`)
  }
  let inspector: string | undefined
  if (o.inspect) {
    try {
      inspector = await inspectorUrl(o.logFile, 5000)
    } catch (err) {
      await stop(proc.child)
      throw err
    }
  }
  return {
    port,
    proc,
    env,
    inspector,
    stop: async () => {
      await stop(proc.child, 15_000)
      return { code: proc.child.exitCode, signal: proc.child.signalCode }
    }
  }
}

/** VmRSS of `pid` in bytes (Linux /proc); undefined elsewhere or when the process is gone. */
export function rssBytes (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

/** Prometheus text -> value per series, labels kept (`name{label="v"}`), for the ws_* counters by reason. */
export async function scrapeSeries (port: number): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(3000) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`)
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line)
    if (m?.[1] === undefined) continue
    const v = Number(m[2])
    if (Number.isFinite(v)) out[m[1]] = v
  }
  return out
}

/** The series of the names given (all label sets), or an `error` entry when the scrape fails. */
export async function seriesOf (port: number, names: RegExp): Promise<Record<string, number | string>> {
  try {
    const all = await scrapeSeries(port)
    return Object.fromEntries(Object.entries(all).filter(([k]) => names.test(k)))
  } catch (err) {
    return { error: (err as Error).message }
  }
}

/**
 * The gateway's output (LOG_LEVEL=warn: its warnings and errors, and anything else it printed),
 * without the inspector's own lines: counted by level, message and error, plus the first `max`.
 */
export function warnLines (logFile: string, max: number): { count: number, by_message: Record<string, number>, first: string[] } {
  let text = ''
  try { text = readFileSync(logFile, 'utf8') } catch { return { count: 0, by_message: {}, first: [] } }
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !INSPECTOR_LINE.test(l))
  const byMessage: Record<string, number> = {}
  for (const line of lines) {
    let key = line.slice(0, 160)
    try {
      const j = JSON.parse(line) as { level?: unknown, msg?: unknown, err?: unknown }
      key = `level ${String(j.level)}: ${String(j.msg)}${j.err !== undefined ? ` (${typeof j.err === 'string' ? j.err : JSON.stringify(j.err).slice(0, 120)})` : ''}`
    } catch { /* not pino's JSON: the line itself */ }
    byMessage[key] = (byMessage[key] ?? 0) + 1
  }
  return { count: lines.length, by_message: byMessage, first: lines.slice(0, max).map((l) => l.slice(0, 400)) }
}
