/**
 * Before a gateway connects with its INSTANCE_ID as MQTT client id (which would knock a live
 * gateway with the same id off the broker: MQTT's session takeover), it looks at
 * `<prefix>/gateways/<INSTANCE_ID>` under another client id. The id is taken when a heartbeat
 * arrives live (not the retained copy) within 2 heartbeat intervals: then the start fails with
 * a ConfigError (exit 78, one line naming INSTANCE_ID) and the live gateway never notices. The
 * wait is 2 intervals whether or not a retained copy arrived (a broker may keep none, or a will
 * from an old connection may have cleared it). Each node of MQTT_URL is tried until one
 * answers; if none does, the start goes on (the link's own retries deal with the broker) and
 * the check is logged as skipped.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from '../log.js'
import { openClient } from '../mqtt/open-client.js'
import { ConfigError } from '../settings/kernel.js'
import { splitMqttUrls } from '../settings/parsers.js'
import { gatewayTopic, parseGatewayBeat } from './gateway-presence.js'

export interface ClaimOptions {
  url: string
  prefix: string
  instanceId: string
  /** CLUSTER_HEARTBEAT_MS: how often a live holder beats. */
  heartbeatMs: number
  keepaliveS: number
  connectTimeoutMs: number
  log: Logger
}

type Verdict = 'free' | 'taken' | 'unknown'

function ask (o: ClaimOptions, url: string): Promise<Verdict> {
  const topic = gatewayTopic(o.prefix, o.instanceId)
  const client = openClient({ url, clientId: `${o.instanceId}-claim-${randomBytes(3).toString('hex')}`, keepaliveS: o.keepaliveS, connectTimeoutMs: o.connectTimeoutMs })
  client.on('error', () => {})
  return new Promise<Verdict>((resolve) => {
    const timers: NodeJS.Timeout[] = []
    let settled = false
    const done = (v: Verdict): void => {
      if (settled) return
      settled = true
      for (const timer of timers) clearTimeout(timer)
      client.end(true)
      resolve(v)
    }
    timers.push(setTimeout(() => { done('unknown') }, o.connectTimeoutMs + 1000))
    client.on('close', () => { done('unknown') })
    client.on('message', (_t, payload, packet) => {
      // Empty: a will or a goodbye cleared it. A retained copy is only a claim; a live one is proof.
      if (payload.length > 0 && !packet.retain && parseGatewayBeat(payload, o.instanceId)?.status === 'online') done('taken')
    })
    client.on('connect', () => {
      for (const timer of timers.splice(0)) clearTimeout(timer)
      // QoS 0: a look, not a subscription to keep (on NATS a QoS 1 one is a JetStream consumer).
      client.subscribe(topic, { qos: 0 }, (err) => {
        if (err !== null && err !== undefined) { done('unknown'); return }
        timers.push(setTimeout(() => { done('free') }, 2 * o.heartbeatMs + 200))
      })
    })
  })
}

export async function claimInstanceId (o: ClaimOptions): Promise<void> {
  for (const url of splitMqttUrls(o.url)) {
    const verdict = await ask(o, url)
    if (verdict === 'taken') {
      throw new ConfigError('INSTANCE_ID', `"${o.instanceId}" is already used by a live gateway (heartbeats on ${gatewayTopic(o.prefix, o.instanceId)}); give each gateway its own, or leave it unset for a random one`, 'tether-b2')
    }
    if (verdict === 'free') return
  }
  o.log.warn({ instance_id: o.instanceId }, 'could not check that INSTANCE_ID is free: no broker node answered; starting anyway')
}
