/**
 * The in-process MQTT 3.1.1 broker (aedes) used when MQTT_URL is unset, so that `npm start`
 * needs nothing installed. Loopback only, and not open: clients log in with the accounts of
 * broker-credentials.ts and may touch only the topics broker-acl.ts gives their role — a local
 * process can neither inject hints nor read other users' chats. If the configured port is
 * taken (commonly by a system Mosquitto on 1883) it says so and takes a free port instead.
 */
import net from 'node:net'
import { Aedes, type AuthenticateError, type Client } from 'aedes'
import type { Logger } from '../log.js'
import { mayPublish, maySubscribe, type BrokerRole } from './broker-acl.js'
import { roleOf, urlWithAccount, type BrokerCredentials } from './broker-credentials.js'

export interface EmbeddedBroker {
  /** Without credentials: for logs and for telling where the broker is. */
  readonly url: string
  /** With the gateway account's credentials. */
  readonly gatewayUrl: string
  /** With the worker account's credentials (the demo responder, a local LLM worker). */
  readonly workerUrl: string
  readonly port: number
  close: () => Promise<void>
}

export interface EmbeddedBrokerOptions {
  port: number
  log: Logger
  credentials: BrokerCredentials
  topicPrefix: string
  /** The gateway's client id (INSTANCE_ID), which no worker account may take. */
  gatewayClientId: string
  /** A client was refused (bad login, or a topic outside its role), for the metrics. */
  onRefused?: (what: 'login' | 'publish' | 'subscribe') => void
}

/** MQTT 3.1.1 3.2.2.3: CONNACK return codes 2, "identifier rejected", and 4, "bad user name or password". */
const IDENTIFIER_REJECTED = 2
const BAD_LOGIN = 4

/**
 * The largest payload the embedded broker passes on: deploy/mosquitto's max_packet_size. This
 * broker runs inside the gateway, so what it holds is the gateway's memory.
 */
export const EMBEDDED_MAX_PAYLOAD_BYTES = 1024 * 1024

/** Why a publish is refused, or null: outside the role's topics, too large, or retained where nothing may be. */
function publishProblem (role: BrokerRole | undefined, options: EmbeddedBrokerOptions, clientId: string, packet: { topic: string, payload: Buffer | string, retain: boolean }): string | null {
  if (role === undefined || !mayPublish(role, options.topicPrefix, clientId, packet.topic)) return 'topic not allowed'
  if (Buffer.byteLength(packet.payload) > EMBEDDED_MAX_PAYLOAD_BYTES) return 'payload too large'
  // Retained messages live in this process until replaced: only the templates are meant to be,
  // and a gateway's own presence (one message per gateway, cleared by its will and its goodbye).
  if (packet.retain && packet.topic !== `${options.topicPrefix}/templates` && !(role === 'gateway' && packet.topic === `${options.topicPrefix}/gateways/${clientId}`)) return 'retain not allowed'
  return null
}

function installAccessControl (broker: Aedes, options: EmbeddedBrokerOptions): void {
  const roles = new WeakMap<Client, BrokerRole>()
  const { log } = options
  broker.authenticate = (client, username, password, done) => {
    const refuse = (returnCode: number, why: string): void => {
      log.warn({ client_id: client.id.slice(0, 64) }, `embedded MQTT broker: login refused (${why})`)
      options.onRefused?.('login')
      const err = new Error(why) as AuthenticateError
      err.returnCode = returnCode
      done(err, false)
    }
    const role = roleOf(options.credentials, username, password)
    if (role === null) { refuse(BAD_LOGIN, 'bad user name or password'); return }
    // A client id names one connection: a worker that logged in with the gateway's id would
    // throw the gateway off the broker (the broker drops the older of two clients of one id).
    if (role === 'worker' && client.id === options.gatewayClientId) { refuse(IDENTIFIER_REJECTED, 'a worker account used the gateway\'s client id'); return }
    roles.set(client, role)
    done(null, true)
  }
  broker.authorizePublish = (client, packet, callback) => {
    // null: a publish by the broker itself (a will is checked when it is set, below).
    if (client === null) { callback(null); return }
    const problem = publishProblem(roles.get(client), options, client.id, packet)
    if (problem === null) { callback(null); return }
    log.warn({ client_id: client.id.slice(0, 64), topic: packet.topic.slice(0, 200), problem }, 'embedded MQTT broker: publish refused')
    options.onRefused?.('publish')
    callback(new Error('publish not authorized'))
  }
  broker.authorizeSubscribe = (client, sub, callback) => {
    const role = roles.get(client)
    if (role !== undefined && maySubscribe(role, options.topicPrefix, client.id, sub.topic)) { callback(null, sub); return }
    log.warn({ client_id: client.id.slice(0, 64), topic: sub.topic.slice(0, 200) }, 'embedded MQTT broker: subscribe refused')
    options.onRefused?.('subscribe')
    // SUBACK 0x80 for this filter (MQTT 3.1.1 3.9.3), the connection stays.
    callback(null, null)
  }
}

function listen (server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => { server.off('listening', onListening); reject(err) }
    const onListening = (): void => {
      server.off('error', onError)
      resolve((server.address() as net.AddressInfo).port)
    }
    server.once('error', onError)
    server.once('listening', onListening)
    server.listen(port, '127.0.0.1')
  })
}

export async function startEmbeddedBroker (options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker()
  installAccessControl(broker, options)
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    // Same reason as the client side: Nagle + delayed ACK costs ~40 ms per QoS 1 round trip.
    socket.setNoDelay(true)
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    broker.handle(socket)
  })
  let port: number
  try {
    port = await listen(server, options.port)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || options.port === 0) {
      broker.close()
      throw err
    }
    port = await listen(server, 0)
    options.log.warn({ wanted: options.port, port }, `embedded MQTT broker: port ${options.port} is taken, using free port ${port}`)
  }
  const url = `mqtt://127.0.0.1:${port}`
  options.log.info({ url }, `embedded MQTT broker (aedes, MQTT 3.1.1) listening on ${url}`)
  let closed: Promise<void> | null = null
  return {
    url,
    gatewayUrl: urlWithAccount(url, options.credentials.gateway),
    workerUrl: urlWithAccount(url, options.credentials.worker),
    port,
    close () {
      closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => { broker.close(() => resolve()) })
      })
      return closed
    }
  }
}
