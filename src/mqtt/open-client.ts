import net from 'node:net'
import { MqttClient, type IClientOptions } from 'mqtt'

export interface OpenClientOptions {
  url: string
  clientId: string
  keepaliveS: number
  connectTimeoutMs: number
  /** 4 (3.1.1, the default) or 5. */
  protocolVersion?: 4 | 5
  /** Published by the broker if this client vanishes without a DISCONNECT. */
  will?: { topic: string, payload: string, qos: 0 | 1, retain?: boolean }
}

/**
 * One mqtt.js client for one connection attempt. Reconnecting is the link machine's job, so
 * mqtt.js's own loop is off (`reconnectPeriod: 0`: fixed interval, no backoff, no jitter).
 * The socket is built here so that Nagle is off: with Nagle and delayed ACKs every QoS 1
 * round trip waits ~40 ms at light load (measured on Mosquitto: 23 round trips/s instead of
 * ~2,400 at concurrency 1). Without Nagle every publish would be a system call of its own;
 * coalesceWrites() gathers the packets of one event-loop turn into one instead.
 */
export function openClient (options: OpenClientOptions): MqttClient {
  const url = new URL(options.url)
  const port = url.port === '' ? 1883 : Number(url.port)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const clientOptions: IClientOptions = {
    clientId: options.clientId,
    // 3.1.1 unless asked: the embedded broker and some managed brokers speak nothing newer.
    protocolVersion: options.protocolVersion ?? 4,
    clean: true,
    keepalive: options.keepaliveS,
    reconnectPeriod: 0,
    // The machine times the attempt; mqtt.js's own timer is a backstop a little later.
    connectTimeout: options.connectTimeoutMs + 1000,
    resubscribe: false,
    queueQoSZero: false,
    // mqtt.js calls its logger several times per packet; the `debug` package's formatting
    // showed up at ~2% of the gateway's CPU under load even when disabled.
    log: () => {}
  }
  if (options.will !== undefined) clientOptions.will = { topic: options.will.topic, payload: Buffer.from(options.will.payload), qos: options.will.qos, retain: options.will.retain === true }
  if (url.username !== '') clientOptions.username = decodeURIComponent(url.username)
  if (url.password !== '') clientOptions.password = decodeURIComponent(url.password)
  const streamBuilder = (): net.Socket => {
    const socket = net.createConnection({ host, port })
    socket.setNoDelay(true)
    coalesceWrites(socket)
    return socket
  }
  return new MqttClient(streamBuilder as never, clientOptions)
}

/**
 * Holds a socket's writes until the end of the current event-loop turn and sends them in one
 * writev. uWebSockets.js calls into JavaScript once per request, and Node flushes a write made
 * there before the next request's callback (mqtt-packet corks each packet only until
 * process.nextTick), so at 64 requests in flight each publish was its own system call: 15% of
 * the gateway's CPU in a profile of bench:chat. setImmediate runs right after the turn's I/O
 * callbacks, so a packet waits microseconds, not a timer's resolution.
 */
export function coalesceWrites (socket: net.Socket): void {
  let corked = false
  const uncork = (): void => {
    corked = false
    socket.uncork()
  }
  const write = socket.write
  // Patched on the instance: mqtt.js and mqtt-packet call write() (and cork/uncork) directly.
  socket.write = function (this: net.Socket, ...args: Parameters<net.Socket['write']>) {
    if (!corked && !socket.destroyed) {
      corked = true
      socket.cork()
      setImmediate(uncork)
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args)
  } as net.Socket['write']
}
