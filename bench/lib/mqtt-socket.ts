/**
 * An mqtt.js client on a TCP socket we build ourselves, so Nagle's algorithm is off: with it on,
 * a small PUBACK or reply waits up to 40 ms (delayed-ACK interplay) and every p99 is a lie.
 */
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { MqttClient, type IClientOptions } from 'mqtt'

export interface ConnectOptions {
  readonly url: string
  readonly clientIdPrefix: string
  readonly connectTimeoutMs?: number
  /** Reconnect after a drop (workers) or fail fast (load clients and probes). */
  readonly reconnect?: boolean
  /** Wait between reconnect attempts when `reconnect` is set (mqtt.js's fixed period); 1000 by default. */
  readonly reconnectPeriodMs?: number
  /** An exact client id (an announced worker's id), instead of the prefix plus random hex. */
  readonly clientId?: string
  /** The last will the broker publishes if this client vanishes. */
  readonly will?: { topic: string, payload: string }
}

export function hostPort (url: string): { host: string, port: number } {
  const u = new URL(url)
  return { host: u.hostname, port: u.port === '' ? 1883 : Number(u.port) }
}

/** Resolves once CONNACK arrives; rejects (and ends the client) on error or after the timeout. */
export async function connectNoDelay (o: ConnectOptions): Promise<MqttClient> {
  const { host, port } = hostPort(o.url)
  const timeoutMs = o.connectTimeoutMs ?? 5000
  const opts: IClientOptions = {
    protocolVersion: 4,
    clientId: o.clientId ?? `${o.clientIdPrefix}-${randomBytes(4).toString('hex')}`,
    ...(o.will !== undefined ? { will: { topic: o.will.topic, payload: Buffer.from(o.will.payload), qos: 1 as const, retain: false } } : {}),
    clean: true,
    keepalive: 30,
    connectTimeout: timeoutMs,
    reconnectPeriod: o.reconnect === true ? o.reconnectPeriodMs ?? 1000 : 0,
    resubscribe: true
  }
  const client = new MqttClient(() => {
    const s = net.createConnection({ host, port })
    s.setNoDelay(true)
    return s
  }, opts)
  return await new Promise<MqttClient>((resolve, reject) => {
    const timer = setTimeout(() => { fail(new Error(`MQTT connect to ${o.url} timed out after ${timeoutMs} ms`)) }, timeoutMs)
    const onConnect = (): void => { cleanup(); resolve(client) }
    const onError = (err: Error): void => { fail(err) }
    const onClose = (): void => { if (o.reconnect !== true) fail(new Error(`MQTT connection to ${o.url} closed before CONNACK`)) }
    function fail (err: Error): void { cleanup(); client.end(true); reject(err) }
    function cleanup (): void {
      clearTimeout(timer)
      client.off('connect', onConnect)
      client.off('error', onError)
      client.off('close', onClose)
    }
    client.once('connect', onConnect)
    client.on('error', onError)
    client.on('close', onClose)
  })
}

export async function subscribe (client: MqttClient, topic: string, qos: 0 | 1): Promise<void> {
  const granted = await client.subscribeAsync(topic, { qos })
  const g = granted[0]
  if (g === undefined || g.qos === 128) throw new Error(`subscription to ${topic} refused`)
}

export async function endClient (client: MqttClient, timeoutMs = 2000): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => { client.end(true); resolve() }, timeoutMs)
    client.end(false, () => { clearTimeout(timer); resolve() })
  })
}
