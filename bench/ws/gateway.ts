/**
 * The gateway of bench:ws: persistent mode on the run's own database, with the WebSocket limits
 * raised so that the bench measures delivery and not a limit, optionally with the V8 inspector
 * on loopback for forced GCs (bench/ws/inspector.ts); and what it printed, summarised.
 */
import { readFileSync } from 'node:fs'
import { LIMITS_LIFTED, linkEnv, startGateway, type Gateway, type LinkOptions } from '../lib/gateway.js'
import { stop } from '../lib/proc.js'
import { INSPECTOR_LINE, inspectorUrl } from './inspector.js'

export interface WsGateway extends Gateway {
  /** The V8 inspector's WebSocket URL when started with `inspect` (for forced GCs). */
  readonly inspector: string | undefined
}

export function wsGatewayEnv (o: LinkOptions & { idleTimeoutS?: number }): Record<string, string> {
  return {
    // Only when asked (BENCH_WS_IDLE_TIMEOUT_S): it decides when uWS pings idle sockets.
    ...(o.idleTimeoutS !== undefined ? { WS_IDLE_TIMEOUT_S: String(o.idleTimeoutS) } : {}),
    ...linkEnv({ ...o, chatMode: 'persistent' }),
    // 8 MiB per socket before the 4001 sweep (uWS's hard limit is twice that): a client that
    // lags for a moment at 100,000 deliveries/s must show up as latency, not as a close.
    WS_MAX_BACKPRESSURE: String(8 * 1024 * 1024),
    ...LIMITS_LIFTED
  }
}

export async function startWsGateway (o: Omit<LinkOptions, 'port' | 'chatMode'> & { logFile: string, readyTimeoutMs: number, inspect: boolean, idleTimeoutS?: number }): Promise<WsGateway> {
  const gateway = await startGateway({
    env: (port) => wsGatewayEnv({ ...o, port }),
    logFile: o.logFile,
    readyTimeoutMs: o.readyTimeoutMs,
    // Loopback only, port chosen by the kernel: the inspector is there for forced GCs.
    nodeArgs: o.inspect ? ['--inspect=127.0.0.1:0'] : []
  })
  let inspector: string | undefined
  if (o.inspect) {
    try {
      inspector = await inspectorUrl(o.logFile, 5000)
    } catch (err) {
      await stop(gateway.proc.child)
      throw err
    }
  }
  return { ...gateway, inspector }
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
