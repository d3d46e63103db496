/**
 * Where each chat request goes, and what happens when the worker it went to does not take it
 * (contract v1.1, "Workers: presence, acknowledgement, capacity"):
 *
 * - No announced workers (v1 fleets) or WORKER_PRESENCE=off: the shared `<prefix>/chat/request`.
 * - Otherwise the least loaded of two online workers with room, on `<prefix>/chat/request/<id>`;
 *   none online -> 503 `no_workers` at once, all at capacity -> the same, saying so.
 * - Until the worker acknowledges (`ack`, or any reply), the request may move once: after
 *   CHAT_ACCEPT_TIMEOUT_MS without an ack, when its worker goes offline, or when it answers
 *   `busy`. A request that cannot move ends with `worker_lost` (or `no_workers` after `busy`).
 * - Acknowledged requests stay where they are; if that worker goes offline they end with
 *   `worker_lost`, and the cancel goes to it in case it comes back.
 *
 * The request's payload is kept only until it is acknowledged: afterwards nothing will send it
 * again, and the history it carries may be large.
 */
import type { Clock } from '../clock.js'
import type { Choice, WorkerFleet } from '../fleet/worker-fleet.js'
import type { Logger } from '../log.js'
import type { MqttLink, PublishExtra } from '../mqtt/mqtt-link.js'
import { BUSY, type ReplyEnvelope } from '../mqtt/protocol.js'
import type { Topics } from '../mqtt/topics.js'

export type PresenceMode = 'auto' | 'required' | 'off'
/** Why a request moved to another worker. */
export type MoveReason = 'no_ack' | 'offline' | 'busy' | 'unrouted'
/** What became of a reply: handled here (an ack), passed on to the registry, or dropped. */
export type ReplyRoute = 'pass' | 'consumed' | 'foreign' | 'unknown_ack'
/** The two ends the routing decides (pending-request causes). */
export type RoutingFailure = 'no_workers' | 'worker_lost'

export interface WorkerRoutingOptions {
  mode: PresenceMode
  fleet: WorkerFleet
  link: Pick<MqttLink, 'publish'>
  topics: Topics
  clock: Clock
  log: Logger
  /** CHAT_ACCEPT_TIMEOUT_MS. */
  acceptTimeoutMs: number
  /** Ends a request in flight with this cause (registry.fail). */
  fail: (requestId: string, cause: RoutingFailure) => void
  /** Tells a worker to drop a request that moved away from it. */
  cancelAt: (workerId: string, requestId: string) => void
  onMoved?: (reason: MoveReason) => void
}

/** `link`: the link refused the publish; `none`/`full`: no worker can take it. */
export type SendOutcome = 'sent' | 'link' | 'none' | 'full'

export interface WorkerRouting {
  /**
   * Publishes a new request, or says why it could not. `properties` (MQTT 5: expiry, response
   * topic, correlation data) go with it, and with it again if it moves.
   */
  send: (requestId: string, payload: string, properties?: PublishExtra['properties']) => SendOutcome
  /** What send() would answer now for want of a worker, without sending: `none`, `full`, or null. */
  refusal: () => 'none' | 'full' | null
  /** Sees every well-formed reply before the registry does. */
  onReply: (reply: ReplyEnvelope) => ReplyRoute
  /** The worker went offline: move or end what it holds. */
  workerOffline: (workerId: string) => void
  /** A stream resumed from another gateway (src/cluster/stream-resume.ts): its worker already runs it. */
  adopt: (requestId: string, workerId: string) => void
  /** The announced worker a request is with, or null (a v1 worker's, or none in flight). */
  workerOf: (requestId: string) => string | null
  /** The request ended; returns the worker it was with (for a targeted cancel), or null. */
  settled: (requestId: string) => string | null
  /** Requests sent to announced workers and not yet settled. */
  readonly size: number
}

interface Assignment {
  workerId: string
  acked: boolean
  moves: number
  /** Kept until acknowledged, to send it again elsewhere. */
  payload: string | null
  properties: PublishExtra['properties'] | undefined
  /** When it was first sent: a move sends it with the expiry that is left, not the first one. */
  sentAt: number
  timer: unknown
}

export function createWorkerRouting (options: WorkerRoutingOptions): WorkerRouting {
  const { fleet, link, topics, clock, log } = options
  const assignments = new Map<string, Assignment>()

  const directed = (): boolean => options.mode === 'required' || (options.mode === 'auto' && fleet.announced)

  function expiryLeft (a: Assignment): PublishExtra['properties'] | undefined {
    const p = a.properties
    if (p?.messageExpiryInterval === undefined) return p
    const left = p.messageExpiryInterval - Math.floor((clock.now() - a.sentAt) / 1000)
    return { ...p, messageExpiryInterval: Math.max(1, left) }
  }

  /**
   * MQTT 5 (properties given): a PUBACK saying nobody subscribes to the worker's topic moves the
   * request (the worker is gone). On 3.1.1 nothing: no closure per chat for a PUBACK that says nothing.
   */
  function direct (requestId: string, workerId: string, properties: PublishExtra['properties'] | undefined): PublishExtra | undefined {
    if (properties === undefined) return undefined
    return {
      properties,
      onUnrouted: () => {
        const a = assignments.get(requestId)
        if (a !== undefined && a.workerId === workerId && !a.acked) move(requestId, a, 'unrouted')
      }
    }
  }

  function armAccept (requestId: string, a: Assignment): void {
    a.timer = clock.setTimeout(() => {
      a.timer = null
      if (!a.acked && assignments.get(requestId) === a) move(requestId, a, 'no_ack')
    }, options.acceptTimeoutMs)
  }

  function accepted (a: Assignment): void {
    if (a.acked) return
    a.acked = true
    a.payload = null
    if (a.timer !== null) { clock.clearTimeout(a.timer); a.timer = null }
  }

  /** Sends the request to another worker, once; otherwise ends it. */
  function move (requestId: string, a: Assignment, reason: MoveReason): void {
    const from = a.workerId
    const payload = a.payload
    // Nobody took it (busy, or nobody subscribed): nobody was lost.
    const failure: RoutingFailure = reason === 'busy' || reason === 'unrouted' ? 'no_workers' : 'worker_lost'
    if (a.timer !== null) { clock.clearTimeout(a.timer); a.timer = null }
    const choice: Choice = a.moves >= 1 || payload === null ? 'none' : fleet.choose(from)
    if (typeof choice === 'string' || !link.publish(topics.chatRequestFor(choice.workerId), payload as string, 1, direct(requestId, choice.workerId, expiryLeft(a)))) {
      log.warn({ request_id: requestId, worker_id: from, reason, cause: failure }, 'chat could not move to another LLM worker')
      // The settlement sends the worker its cancel.
      options.fail(requestId, failure)
      return
    }
    // A worker that answered `busy` dropped it, and nobody got an unrouted one; one that was
    // silent may still run it if it wakes up.
    if (reason !== 'busy' && reason !== 'unrouted') options.cancelAt(from, requestId)
    fleet.release(from)
    fleet.take(choice.workerId)
    a.workerId = choice.workerId
    a.moves++
    options.onMoved?.(reason)
    log.info({ request_id: requestId, from, to: choice.workerId, reason }, 'chat moved to another LLM worker')
    armAccept(requestId, a)
  }

  return {
    send (requestId, payload, properties) {
      if (!directed()) {
        // MQTT 5: nobody subscribed to the shared topic means no worker at all.
        const extra: PublishExtra | undefined = properties === undefined ? undefined : { properties, onUnrouted: () => { options.fail(requestId, 'no_workers') } }
        return link.publish(topics.chatRequest, payload, 1, extra) ? 'sent' : 'link'
      }
      const choice = fleet.choose()
      if (typeof choice === 'string') return choice
      if (!link.publish(topics.chatRequestFor(choice.workerId), payload, 1, direct(requestId, choice.workerId, properties))) return 'link'
      fleet.take(choice.workerId)
      const a: Assignment = { workerId: choice.workerId, acked: false, moves: 0, payload, properties, sentAt: clock.now(), timer: null }
      assignments.set(requestId, a)
      armAccept(requestId, a)
      return 'sent'
    },
    refusal () {
      if (!directed()) return null
      const choice = fleet.choose()
      return typeof choice === 'string' ? choice : null
    },
    onReply (reply) {
      const a = assignments.get(reply.request_id)
      if (reply.type === 'ack') {
        if (a === undefined) return 'unknown_ack'
        if (a.workerId !== reply.worker_id) return 'foreign'
        accepted(a)
        return 'consumed'
      }
      if (a === undefined) return 'pass'
      // A worker the request was taken from, woken up: its answer would interleave with the new
      // one's. Once a request has moved, a reply that does not say whose it is cannot be told
      // apart, so it is dropped too (replies to a worker's own topic carry worker_id: contract).
      if (reply.worker_id !== undefined ? reply.worker_id !== a.workerId : a.moves > 0) return 'foreign'
      if (reply.type === 'error' && reply.retry === true && reply.error === BUSY && !a.acked) {
        move(reply.request_id, a, 'busy')
        return 'consumed'
      }
      accepted(a)
      return 'pass'
    },
    workerOffline (workerId) {
      for (const [requestId, a] of assignments) {
        if (a.workerId !== workerId) continue
        if (a.acked) options.fail(requestId, 'worker_lost')
        else move(requestId, a, 'offline')
      }
    },
    adopt (requestId, workerId) {
      if (assignments.has(requestId)) return
      fleet.take(workerId)
      assignments.set(requestId, { workerId, acked: true, moves: 0, payload: null, properties: undefined, sentAt: clock.now(), timer: null })
    },
    workerOf: (requestId) => assignments.get(requestId)?.workerId ?? null,
    settled (requestId) {
      const a = assignments.get(requestId)
      if (a === undefined) return null
      assignments.delete(requestId)
      if (a.timer !== null) clock.clearTimeout(a.timer)
      fleet.release(a.workerId)
      return a.workerId
    },
    get size () { return assignments.size }
  }
}
