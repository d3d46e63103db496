/** Starts bench/echo-worker.js as a child process and waits until its subscription is granted. */
import { fileURLToPath } from 'node:url'
import { start, stop, waitForLine, type Started } from './proc.js'

export const ECHO_WORKER_JS = fileURLToPath(new URL('../echo-worker.js', import.meta.url))

export interface Worker {
  readonly proc: Started
  readonly mode: 'echo' | 'silent'
  stop: () => Promise<void>
}

export interface WorkerOptions {
  url: string
  prefix: string
  silent: boolean
  chunks: number
  logFile: string
  reconnectPeriodMs?: number
  /** Announce presence (contract v1.1) under this worker id. */
  announceAs?: string
  heartbeatMs?: number
  /** Hold each chat this long before answering. */
  holdMs?: number
}

export async function startWorker (o: WorkerOptions): Promise<Worker> {
  const env = {
    ...process.env,
    MQTT_URL: o.url,
    MQTT_TOPIC_PREFIX: o.prefix,
    ECHO_CHUNKS: String(o.chunks),
    ECHO_SILENT: o.silent ? '1' : '0',
    ...(o.reconnectPeriodMs !== undefined ? { ECHO_RECONNECT_MS: String(o.reconnectPeriodMs) } : {}),
    ...(o.announceAs !== undefined ? { ECHO_ANNOUNCE: '1', ECHO_ID: o.announceAs } : {}),
    ...(o.heartbeatMs !== undefined ? { ECHO_HEARTBEAT_MS: String(o.heartbeatMs) } : {}),
    ...(o.holdMs !== undefined ? { ECHO_HOLD_MS: String(o.holdMs) } : {})
  }
  const proc = start(process.execPath, [ECHO_WORKER_JS], o.logFile, { env })
  try {
    await waitForLine(proc.child, /echo-worker ready/, 10_000, `echo worker (${o.silent ? 'silent' : 'echo'})`)
  } catch (err) {
    await stop(proc.child)
    throw new Error(`${(err as Error).message}\n${proc.tail()}`)
  }
  return { proc, mode: o.silent ? 'silent' : 'echo', stop: async () => { await stop(proc.child, 3000) } }
}
