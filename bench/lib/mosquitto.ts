/**
 * A private Mosquitto for one bench run: its own port on 127.0.0.1, its own temp config, no
 * persistence, no in-flight or queue limits that would turn a throughput test into a test of
 * broker defaults (max_inflight_messages defaults to 20 per client, max_queued_messages to 1000).
 */
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connectNoDelay, endClient } from './mqtt-socket.js'
import { freePort, start, stop, isRunning, sleep, type Started } from './proc.js'

export interface Broker {
  readonly url: string
  readonly port: number
  readonly version: string
  readonly config: string
  readonly proc: Started
  /** Its config file: a restart with it listens on the same port. */
  readonly confFile: string
  stop: () => Promise<void>
}

export function mosquittoVersion (bin = 'mosquitto'): string {
  const r = spawnSync(bin, ['-h'], { encoding: 'utf8', timeout: 5000 })
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`
  const m = /mosquitto version (\S+)/.exec(text)
  if (m?.[1] === undefined) throw new Error(`cannot run "${bin} -h" (${r.error?.message ?? 'no version in its output'}); is Mosquitto installed?`)
  return m[1]
}

export async function startMosquitto (dir: string, bin = 'mosquitto'): Promise<Broker> {
  const version = mosquittoVersion(bin)
  const port = await freePort()
  const config = [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'set_tcp_nodelay true',
    'persistence false',
    'max_inflight_messages 0',
    'max_queued_messages 1000000',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'connection_messages false',
    ''
  ].join('\n')
  const confFile = join(dir, 'mosquitto.conf')
  writeFileSync(confFile, config)
  const proc = start(bin, ['-c', confFile], join(dir, 'mosquitto.log'))
  const url = `mqtt://127.0.0.1:${port}`

  // Ready means an MQTT CONNACK, not just an open port; bounded to ~10 s.
  const deadline = Date.now() + 10_000
  let lastErr = ''
  for (;;) {
    if (!isRunning(proc.child)) throw new Error(`mosquitto exited at start:\n${proc.tail()}`)
    try {
      const c = await connectNoDelay({ url, clientIdPrefix: 'bench-probe', connectTimeoutMs: 1000 })
      await endClient(c)
      break
    } catch (err) {
      lastErr = (err as Error).message
    }
    if (Date.now() > deadline) {
      await stop(proc.child)
      throw new Error(`mosquitto on port ${port} not accepting MQTT within 10 s (${lastErr}):\n${proc.tail()}`)
    }
    await sleep(50)
  }
  return { url, port, version, config, proc, confFile, stop: async () => { await stop(proc.child) } }
}
