/**
 * Before a gateway connects with its INSTANCE_ID as MQTT client id (which would knock a live
 * gateway with the same id off the broker: MQTT's session takeover), it looks at
 * `<prefix>/gateways/<INSTANCE_ID>` under another client id. A retained `online` heartbeat is
 * only a claim: the id is taken if a fresh heartbeat follows within 2 of its intervals. Then the
 * start fails with a ConfigError (exit 78, one line naming INSTANCE_ID) and the live gateway
 * never notices. A broker that cannot be reached does not stop the start: the link's own
 * retries deal with it, and the check is logged as skipped.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from '../log.js'
import { openClient } from '../mqtt/open-client.js'
import { ConfigError } from '../settings/kernel.js'
import { gatewayTopic, parseGatewayBeat } from './gateway-presence.js'

export interface ClaimOptions {
  url: string
  prefix: string
  instanceId: string
  keepaliveS: number
  connectTimeoutMs: number
  /** How long to wait for the retained heartbeat after the subscription is granted. */
  retainedWaitMs?: number
  log: Logger
}

export async function claimInstanceId (o: ClaimOptions): Promise<void> {
  const topic = gatewayTopic(o.prefix, o.instanceId)
  const url = o.url.split(',')[0] as string
  const client = openClient({ url, clientId: `${o.instanceId}-claim-${randomBytes(3).toString('hex')}`, keepaliveS: o.keepaliveS, connectTimeoutMs: o.connectTimeoutMs })
  client.on('error', () => {})
  try {
    const verdict = await new Promise<'free' | 'taken' | 'unknown'>((resolve) => {
      let wait: NodeJS.Timeout | null = null
      const giveUp = setTimeout(() => { resolve('unknown') }, o.connectTimeoutMs + 1000)
      const done = (v: 'free' | 'taken' | 'unknown'): void => { clearTimeout(giveUp); if (wait !== null) clearTimeout(wait); resolve(v) }
      client.on('close', () => { done('unknown') })
      client.on('message', (_t, payload, packet) => {
        // Empty: a will or a goodbye cleared it.
        const beat = payload.length === 0 ? null : parseGatewayBeat(payload, o.instanceId)
        if (beat === null || beat.status === 'offline') { done('free'); return }
        // A live publish (not the retained copy) means a gateway is beating now.
        if (!packet.retain) { done('taken'); return }
        if (wait !== null) clearTimeout(wait)
        wait = setTimeout(() => { done('free') }, 2 * Math.max(beat.heartbeat_ms, 100))
      })
      client.on('connect', () => {
        client.subscribe(topic, { qos: 1 }, (err) => {
          if (err !== null && err !== undefined) { done('unknown'); return }
          // No retained heartbeat by then: nobody has ever used this id (or its will cleared it).
          wait = setTimeout(() => { done('free') }, o.retainedWaitMs ?? 500)
        })
      })
    })
    if (verdict === 'taken') {
      throw new ConfigError('INSTANCE_ID', `"${o.instanceId}" is already used by a live gateway (heartbeats on ${topic}); give each gateway its own, or leave it unset for a random one`, 'tether-b2')
    }
    if (verdict === 'unknown') o.log.warn({ instance_id: o.instanceId }, 'could not check that INSTANCE_ID is free: the broker did not answer; starting anyway')
  } finally {
    client.end(true)
  }
}
