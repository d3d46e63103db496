/**
 * The worker's side of presence (contract v1.1): a heartbeat on `<prefix>/workers/<id>` at once
 * when the link comes up and every WORKER_HEARTBEAT_MS after, saying how many chats it takes
 * and holds; `draining` while it stops; `offline` when it is done. The broker publishes the
 * last will (`offline`, set at connect: src/llm-worker/main.ts) if the process dies instead.
 */
import type { Clock } from '../clock.js'
import { createHeartbeat } from '../mqtt/heartbeat.js'
import { encodeHeartbeat, type HeartbeatEnvelope } from '../mqtt/protocol.js'
import type { WorkerLink } from './reply-publisher.js'

export interface PresenceOptions {
  link: WorkerLink
  topic: string
  workerId: string
  heartbeatMs: number
  capacity: number
  /** Chats held now (running and waiting). */
  inFlight: () => number
  clock: Clock
}

export interface Presence {
  start: () => void
  /** From now on heartbeats say `draining`: gateways send nothing new. */
  drain: () => void
  /** Says `offline` and stops beating. */
  stop: () => void
}

/** The last will: what gateways hear if the worker vanishes. */
export function lastWill (workerId: string): string {
  return encodeHeartbeat(beat(workerId, 'offline', 0, 0, 0))
}

function beat (workerId: string, status: HeartbeatEnvelope['status'], capacity: number, inFlight: number, heartbeatMs: number): HeartbeatEnvelope {
  return { v: 1, worker_id: workerId, status, capacity, in_flight: inFlight, heartbeat_ms: heartbeatMs }
}

export function createPresence (options: PresenceOptions): Presence {
  const { link } = options
  let status: 'online' | 'draining' = 'online'
  let running = false
  function send (): void {
    link.publish(options.topic, encodeHeartbeat(beat(options.workerId, status, options.capacity, options.inFlight(), options.heartbeatMs)), 1)
  }
  const heartbeat = createHeartbeat({ link, intervalMs: options.heartbeatMs, clock: options.clock, send })

  return {
    start () {
      running = true
      heartbeat.start()
    },
    drain () {
      status = 'draining'
      if (running) send()
    },
    stop () {
      if (!running) return
      running = false
      heartbeat.stop()
      link.publish(options.topic, lastWill(options.workerId), 1)
    }
  }
}
