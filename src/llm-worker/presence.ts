/**
 * The worker's side of presence (contract v1.1): a heartbeat on `<prefix>/workers/<id>` at once
 * when the link comes up and every WORKER_HEARTBEAT_MS after, saying how many chats it takes
 * and holds; `draining` while it stops; `offline` when it is done. The broker publishes the
 * last will (`offline`, set at connect: src/llm-worker/main.ts) if the process dies instead.
 */
import type { Clock } from '../clock.js'
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
  const { link, clock } = options
  let status: 'online' | 'draining' = 'online'
  let timer: unknown = null
  let running = false

  function send (): void {
    link.publish(options.topic, encodeHeartbeat(beat(options.workerId, status, options.capacity, options.inFlight(), options.heartbeatMs)), 1)
  }
  function tick (): void {
    timer = null
    if (!running) return
    send()
    timer = clock.setTimeout(tick, options.heartbeatMs)
  }
  // A gateway learns of the worker the moment the link is back, not an interval later.
  const onUp = (): void => {
    if (!running) return
    if (timer !== null) clock.clearTimeout(timer)
    tick()
  }

  return {
    start () {
      if (running) return
      running = true
      link.events.on('up', onUp)
      if (link.state === 'connected') tick()
    },
    drain () {
      status = 'draining'
      if (running) send()
    },
    stop () {
      if (!running) return
      running = false
      link.events.off('up', onUp)
      if (timer !== null) clock.clearTimeout(timer)
      timer = null
      link.publish(options.topic, lastWill(options.workerId), 1)
    }
  }
}
