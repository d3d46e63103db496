/**
 * Gateways knowing each other (contract v1.1, "Several gateways"): each gateway announces
 * itself on `<prefix>/gateways/<instance_id>` with a retained heartbeat every
 * CLUSTER_HEARTBEAT_MS, and listens to the others'. Retained, so a gateway that starts learns at
 * once who is there (and whether its own INSTANCE_ID is taken: instance-claim.ts). Its last
 * will, and its goodbye on a graceful stop, are an empty retained message: that clears the
 * retained heartbeat, so a broker does not keep one message for every gateway that ever ran
 * (INSTANCE_ID is random by default), and subscribers read it as "gone". A gateway is live
 * while its last heartbeat is less than 3 intervals old; the list is computed when read, so no
 * timer runs per gateway.
 */
import type { Clock } from '../clock.js'
import { isValidId } from '../ids.js'
import type { Logger } from '../log.js'
import { createHeartbeat } from '../mqtt/heartbeat.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import { parsePeerJson } from '../peer-json.js'

export interface GatewayBeat {
  v: 1
  instance_id: string
  status: 'online' | 'offline'
  /** When this gateway started (epoch ms). */
  since: number
  heartbeat_ms: number
}

/** A gateway is live for this many of its own intervals after its last heartbeat. */
export const LIVE_INTERVALS = 3
/** Gateways remembered at once; a cluster has a handful. */
const MAX_INSTANCES = 1000
const MAX_BEAT_BYTES = 4096

export function encodeGatewayBeat (beat: GatewayBeat): string {
  return JSON.stringify(beat)
}

/** A gateway heartbeat on the topic of `topicId`; null when it is not one (or names another instance). */
export function parseGatewayBeat (payload: Buffer, topicId: string): GatewayBeat | null {
  if (payload.length > MAX_BEAT_BYTES) return null
  const json = parsePeerJson(payload.toString('utf8'))
  if (!json.ok || typeof json.value !== 'object' || json.value === null) return null
  const b = json.value as Record<string, unknown>
  if (b.v !== 1 || b.instance_id !== topicId || !isValidId(b.instance_id)) return null
  if (b.status !== 'online' && b.status !== 'offline') return null
  if (!Number.isSafeInteger(b.since) || !Number.isSafeInteger(b.heartbeat_ms) || (b.heartbeat_ms as number) < 0 || (b.heartbeat_ms as number) > 600_000) return null
  return { v: 1, instance_id: b.instance_id, status: b.status, since: b.since as number, heartbeat_ms: b.heartbeat_ms as number }
}

export interface ClusterView {
  self: string
  instances: Array<{ instance_id: string, since: string, last_seen_ms: number }>
}

export interface GatewayPresence {
  start: () => void
  /** Says `offline` (retained) and stops beating: a graceful stop. */
  stop: () => void
  view: () => ClusterView
  /**
   * Whether another gateway's live heartbeat was seen within `withinMs`: a stream this one lacks
   * may then be held by it, or have been (one that died since). Never, or long ago: a single
   * gateway, which answers an unknown stream at once.
   */
  peersSeen: (withinMs: number) => boolean
}

export interface GatewayPresenceOptions {
  link: Pick<MqttLink, 'publish' | 'subscribe' | 'unsubscribe' | 'events' | 'state'>
  prefix: string
  instanceId: string
  heartbeatMs: number
  clock: Clock
  log: Logger
  onDropped?: () => void
}

export function gatewayTopic (prefix: string, instanceId: string): string {
  return `${prefix}/gateways/${instanceId}`
}

/** The last will: empty and retained, so it clears the retained heartbeat (and means "gone"). */
export function gatewayWill (prefix: string, instanceId: string): { topic: string, payload: string, qos: 1, retain: true } {
  return { topic: gatewayTopic(prefix, instanceId), payload: '', qos: 1, retain: true }
}

export function createGatewayPresence (options: GatewayPresenceOptions): GatewayPresence {
  const { link, clock } = options
  const since = clock.now()
  const topic = gatewayTopic(options.prefix, options.instanceId)
  const under = `${options.prefix}/gateways/`
  const seen = new Map<string, { since: number, at: number, heartbeatMs: number }>()
  let running = false
  let lastPeerAt: number | null = null
  const beat = encodeGatewayBeat({ v: 1, instance_id: options.instanceId, status: 'online', since, heartbeat_ms: options.heartbeatMs })
  const heartbeat = createHeartbeat({ link, intervalMs: options.heartbeatMs, clock, send: () => { link.publish(topic, beat, 1, undefined, true) } })
  function onBeat (payload: Buffer, t: string, retained = false): void {
    const id = t.slice(under.length)
    if (payload.length === 0) { seen.delete(id); return }
    // A retained copy (sent on every subscribe) says a gateway once beat, not that it is alive:
    // a gateway is listed from its first live heartbeat, an interval later at most.
    if (retained) return
    const b = parseGatewayBeat(payload, id)
    if (b === null) { options.onDropped?.(); return }
    if (b.status === 'offline') { seen.delete(id); return }
    if (!seen.has(id) && seen.size >= MAX_INSTANCES) {
      // Make room from the gateways long gone before refusing a new one.
      const now = clock.now()
      for (const [other, s] of seen) if (now - s.at > LIVE_INTERVALS * Math.max(s.heartbeatMs, 1)) seen.delete(other)
      if (seen.size >= MAX_INSTANCES) { options.onDropped?.(); return }
    }
    seen.set(id, { since: b.since, at: clock.now(), heartbeatMs: b.heartbeat_ms })
    if (id !== options.instanceId) lastPeerAt = clock.now()
  }

  return {
    start () {
      if (running) return
      running = true
      link.subscribe(`${under}+`, 1, onBeat, { deliverUnder: under })
      heartbeat.start()
    },
    stop () {
      if (!running) return
      running = false
      heartbeat.stop()
      link.publish(topic, '', 1, undefined, true)
      link.unsubscribe(`${under}+`)
    },
    peersSeen: (withinMs) => lastPeerAt !== null && clock.now() - lastPeerAt <= withinMs,
    view () {
      const now = clock.now()
      const instances: ClusterView['instances'] = []
      for (const [id, s] of seen) {
        // A retained heartbeat of a gateway that died without its will being sent yet is old news.
        if (id !== options.instanceId && now - s.at > LIVE_INTERVALS * Math.max(s.heartbeatMs, 1)) continue
        instances.push({ instance_id: id, since: new Date(s.since).toISOString(), last_seen_ms: now - s.at })
      }
      if (!instances.some((i) => i.instance_id === options.instanceId)) {
        instances.push({ instance_id: options.instanceId, since: new Date(since).toISOString(), last_seen_ms: 0 })
      }
      instances.sort((a, b) => a.instance_id.localeCompare(b.instance_id))
      return { self: options.instanceId, instances }
    }
  }
}
