/**
 * The gateway's side of the wire to the LLM workers: admission (shutdown, link, caps), one
 * pending-request actor per chat, publishing the request envelope, and turning replies on
 * this instance's reply topic into events for those actors. It knows nothing of transports
 * or storage: run-chat.ts drives one chat through it for every transport.
 */
import type { Clock } from '../clock.js'
import { TetherError } from '../errors.js'
import { redactSecrets } from '../redact.js'
import type { Logger } from '../log.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import { encodeCancel, encodeRequest, parseReply, type CancelCause, type HistoryTurn, type ResumeReply } from '../mqtt/protocol.js'
import type { Topics } from '../mqtt/topics.js'
import type { CancelReason } from '../../machines/pending-request.machine.js'
import type { WorkerFleet } from '../fleet/worker-fleet.js'
import type { Admission, PendingCallbacks, PendingRegistry, Settlement } from './pending-registry.js'
import { createWorkerRouting, type MoveReason, type PresenceMode } from './worker-routing.js'

const CAP_MESSAGES: Record<Exclude<Admission, 'ok'>, string> = {
  total_cap: 'Too many chats in flight; retry later.',
  session_cap: 'Too many chats in flight for this session; retry later.',
  user_cap: 'Too many of your chats are in flight; wait for one to finish.'
}

export interface ChatInput {
  /** Unique per request: it names the request on the wire and in logs. */
  requestId: string
  sessionId: string
  userId: string
  content: string
  history: HistoryTurn[]
}

/** The cancel a settlement owes the worker: every end before its answer, except a lost link. */
export function cancelCause (s: Settlement): CancelCause | null {
  switch (s.outcome) {
    case 'cancelled': return s.cancelReason ?? 'client_gone'
    case 'timedOut': return 'deadline'
    case 'stalled': return 'stalled'
    case 'failed': return s.cause === 'shutdown' ? 'shutdown' : s.cause === 'worker_lost' ? 'worker_lost' : null
    case 'done': return null
    // The worker goes on, answering the gateway that took the stream over.
    case 'handedOver': return null
  }
}

/** `foreign`: from a worker the request was moved away from (or an ack naming another); `unknown_ack`: an ack for no request in flight. */
export type ReplyDrop = 'malformed' | 'too_large' | 'unknown' | 'duplicate' | 'foreign' | 'unknown_ack'

const NO_WORKER_MESSAGES = {
  none: 'No LLM worker is online.',
  full: 'Every LLM worker is at capacity; retry shortly.'
} as const

export interface DispatcherOptions {
  link: MqttLink
  registry: PendingRegistry
  topics: Topics
  clock: Clock
  log: Logger
  chatTimeoutMs: number
  /** Seconds to suggest in Retry-After when a cap is hit. */
  capRetryAfterS?: number
  onReplyDropped?: (reason: ReplyDrop) => void
  /** A chat was refused by a cap, for the metrics. */
  onCapRefused?: (cap: Exclude<Admission, 'ok'>) => void
  /** A cancel was published to the LLM workers. */
  onCancelSent?: (reason: CancelCause) => void
  /** The announced workers (src/fleet/worker-fleet.ts) and how they are used (WORKER_PRESENCE). */
  fleet: WorkerFleet
  presence: PresenceMode
  /** CHAT_ACCEPT_TIMEOUT_MS: how long an announced worker has to acknowledge a request. */
  acceptTimeoutMs: number
  /** A chat was refused at once for want of a worker. */
  onNoWorkers?: (reason: 'none' | 'full') => void
  /** A request moved to another worker. */
  onMoved?: (reason: MoveReason) => void
  /** Several gateways: a worker's `resumed` or a gateway's `handover` (src/cluster/stream-resume.ts); dropped as unknown without one. */
  onResumeReply?: (reply: ResumeReply) => boolean
}

/** A stream another gateway started, taken over here (src/cluster/stream-resume.ts). */
export interface AdoptedChat {
  requestId: string
  sessionId: string
  userId: string
  /** The announced worker that runs it; null for a worker that did not say. */
  workerId: string | null
  /** The request's own deadline (epoch ms), as the worker has it. */
  deadline: number
}

export interface Dispatcher {
  start: () => void
  stop: () => void
  /**
   * Throws the TetherError submit() would throw now for this session (503, 429), without
   * publishing; otherwise holds the session's place under the caps until submit() or the
   * returned release function (for a chat that ends before it is submitted).
   */
  reserve: (sessionId: string, userId: string) => () => void
  /** Throws the TetherError a chat gets now regardless of caps (shutting down, link down). */
  checkOpen: () => void
  /** Holds one of the user's places for work before the session is known (registry.holdUser); throws 429 past the caps. */
  holdUser: (userId: string) => () => void
  /** Publishes the request; throws TetherError (429/503) if it cannot be accepted. Returns the request id. */
  submit: (input: ChatInput, callbacks: PendingCallbacks, reservation?: () => void) => string
  /**
   * Takes over a chat whose worker now answers here (a stream resumed from another gateway):
   * the caps apply as to a new chat (TetherError 429/503), its deadline is the request's own.
   */
  adopt: (chat: AdoptedChat, callbacks: PendingCallbacks) => void
  /** The announced worker a chat in flight is with, or null (a v1 worker's, or none). */
  workerOf: (requestId: string) => string | null
  /** False when the chat is no longer in flight. */
  cancel: (requestId: string, reason?: CancelReason) => boolean
  /**
   * Every settlement passes here (the registry's onSettled): one that ended before its worker's
   * answer publishes the cancel the worker is owed. One function for all requests, not a
   * closure each: the heap per pending request is a goal.
   */
  settled: (settlement: Settlement) => void
  /** The client's connection went; the chat waits for a resume (registry.detach). */
  detach: (requestId: string) => boolean
  /** The client resumed in time (registry.attach). */
  attach: (requestId: string) => boolean
  /** New chats get 503 shutting_down from now on. */
  refuseNew: () => void
  /** A worker went offline (the fleet's onOffline): its chats move or end. */
  workerOffline: (workerId: string) => void
}

/**
 * The largest reply payload read. Far above any model's answer; a payload past it would only
 * stall the event loop while it is decoded and parsed (deploy/mosquitto refuses over 1 MiB).
 */
export const MAX_REPLY_BYTES = 8 * 1024 * 1024

/** Characters of a worker's error text kept in the log line. */
const MAX_LOGGED_WORKER_ERROR = 500

export function createDispatcher (options: DispatcherOptions): Dispatcher {
  const { link, registry, topics, clock, log, fleet } = options
  let refusing = false
  const routing = createWorkerRouting({
    mode: options.presence,
    fleet,
    link,
    topics,
    clock,
    log,
    acceptTimeoutMs: options.acceptTimeoutMs,
    fail: (requestId, cause) => { registry.fail(requestId, cause) },
    cancelAt: (workerId, requestId) => { publishCancel(topics.chatCancelFor(workerId), requestId, 'worker_lost') },
    ...(options.onMoved !== undefined ? { onMoved: options.onMoved } : {})
  })

  function publishCancel (topic: string, requestId: string, reason: CancelCause): void {
    // QoS 1: a cancel lost with the link would leave a GPU busy; a lost link fails its chats
    // with link_down, which sends none (it could not be published).
    if (link.publish(topic, encodeCancel({ v: 1, request_id: requestId, reason }), 1)) options.onCancelSent?.(reason)
  }

  function noWorkers (reason: 'none' | 'full'): TetherError {
    options.onNoWorkers?.(reason)
    return new TetherError('no_workers', NO_WORKER_MESSAGES[reason], 1)
  }

  function onReply (payload: Buffer): void {
    if (payload.length > MAX_REPLY_BYTES) {
      log.warn({ bytes: payload.length }, 'dropped a reply over the size bound')
      options.onReplyDropped?.('too_large')
      return
    }
    const parsed = parseReply(payload)
    if (!parsed.ok) {
      log.debug({ bytes: payload.length }, 'dropped malformed reply')
      options.onReplyDropped?.('malformed')
      return
    }
    const reply = parsed.reply
    if (reply.type === 'moved') {
      // The worker answers another gateway now (a client resumed the stream there): this one
      // lets the chat go, unless the message is not from the worker that holds it.
      const holder = routing.workerOf(reply.request_id)
      if (holder !== null && reply.worker_id !== holder) { options.onReplyDropped?.('foreign'); return }
      if (registry.handOver(reply.request_id)) log.info({ request_id: reply.request_id, to: reply.to, worker_id: reply.worker_id }, 'stream moved to another gateway')
      else options.onReplyDropped?.('unknown')
      return
    }
    if (reply.type === 'resumed' || reply.type === 'handover' || reply.type === 'replay') {
      if (options.onResumeReply?.(reply) !== true) options.onReplyDropped?.('unknown')
      return
    }
    const route = routing.onReply(reply)
    if (route === 'consumed') return
    if (route === 'unknown_ack') {
      // Acks travel at QoS 0 and may overtake nothing or arrive after the answer: an ack for a
      // request that just ended is a late one, not a stranger's.
      const late = registry.deliver(reply)
      if (late !== 'delivered') options.onReplyDropped?.(late === 'duplicate' ? 'duplicate' : 'unknown_ack')
      return
    }
    if (route !== 'pass') {
      log.debug({ request_id: reply.request_id, type: reply.type, route }, 'dropped reply')
      options.onReplyDropped?.(route)
      return
    }
    const delivery = registry.deliver(reply)
    if (delivery === 'delivered' && reply.type === 'error') {
      // The detail is for operators only (the client gets llm_error's catalogue message), and
      // logged only for a request in flight, so replies with made-up ids cannot flood the log.
      log.warn({ request_id: reply.request_id, worker_id: reply.worker_id, worker_error: redactSecrets(reply.error.slice(0, MAX_LOGGED_WORKER_ERROR)) }, 'worker reported an error')
    }
    if (delivery !== 'delivered') {
      log.debug({ request_id: reply.request_id, type: reply.type, delivery }, 'dropped reply')
      options.onReplyDropped?.(delivery)
    }
  }

  function onLinkDown (): void {
    // Replies to these can no longer arrive on a clean session: answer now, not at the deadline.
    const failed = registry.failAll('link_down')
    if (failed > 0) log.warn({ failed }, 'mqtt link lost: in-flight chats answered 503')
  }

  function refuseFor (admission: Exclude<Admission, 'ok'>): TetherError {
    options.onCapRefused?.(admission)
    return new TetherError('too_many_requests', CAP_MESSAGES[admission], options.capRetryAfterS ?? 1)
  }

  /** Shutting down or the link down: nothing can be sent or received for a chat. */
  function checkLink (): void {
    if (refusing) throw new TetherError('shutting_down')
    if (!link.isUp) {
      throw new TetherError('llm_unavailable', `The model broker link is ${link.state}.`, link.retryAfterS())
    }
  }

  function checkOpen (): void {
    checkLink()
    // Before the message is stored: a chat no worker can take is refused in a millisecond.
    const refusal = routing.refusal()
    if (refusal !== null) throw noWorkers(refusal)
  }

  return {
    start () {
      link.subscribe(topics.replyTo, 1, onReply)
      link.events.on('down', onLinkDown)
      if (options.presence !== 'off') fleet.start()
    },
    stop () {
      link.events.off('down', onLinkDown)
      link.unsubscribe(topics.replyTo)
      if (options.presence !== 'off') fleet.stop()
    },
    checkOpen,
    holdUser (userId) {
      const held = registry.holdUser(userId)
      if (typeof held !== 'function') throw refuseFor(held)
      return held
    },
    reserve (sessionId, userId) {
      checkOpen()
      const held = registry.reserve(sessionId, userId)
      if (typeof held !== 'function') throw refuseFor(held)
      return held
    },
    submit (input, callbacks, reservation) {
      // The reservation is given back first: the checks below then count this chat once.
      reservation?.()
      checkOpen()
      const admission = registry.admit(input.sessionId, input.userId)
      if (admission !== 'ok') throw refuseFor(admission)
      const { requestId } = input
      const wasIdle = registry.size === 0
      const payload = encodeRequest({
        v: 1,
        request_id: requestId,
        session_id: input.sessionId,
        user_id: input.userId,
        content: input.content,
        history: input.history,
        reply_to: topics.replyTo,
        deadline: clock.now() + options.chatTimeoutMs
      })
      // Publish before opening: a reply cannot arrive before this synchronous call returns,
      // and a refused publish then leaves nothing behind to clean up.
      const sent = routing.send(requestId, payload, link.protocolVersion === 5
        ? { messageExpiryInterval: Math.ceil(options.chatTimeoutMs / 1000), responseTopic: topics.replyTo, correlationData: Buffer.from(requestId) }
        : undefined)
      if (sent === 'link') throw new TetherError('llm_unavailable', undefined, link.retryAfterS())
      if (sent !== 'sent') throw noWorkers(sent)
      try {
        registry.open(requestId, input.sessionId, options.chatTimeoutMs, callbacks, input.userId)
      } catch (err) {
        // Only a repeated request id gets here (a bug): free what the routing holds for it.
        routing.settled(requestId)
        throw err
      }
      if (wasIdle) link.wake()
      return requestId
    },
    adopt (chat, callbacks) {
      // Not the workers' room: this chat's worker already runs it.
      checkLink()
      const admission = registry.admit(chat.sessionId, chat.userId)
      if (admission !== 'ok') throw refuseFor(admission)
      const wasIdle = registry.size === 0
      // The worker's word for the deadline, bounded by this gateway's own.
      registry.open(chat.requestId, chat.sessionId, Math.min(options.chatTimeoutMs, Math.max(1, chat.deadline - clock.now())), callbacks, chat.userId)
      if (chat.workerId !== null) routing.adopt(chat.requestId, chat.workerId)
      if (wasIdle) link.wake()
    },
    workerOf: (requestId) => routing.workerOf(requestId),
    cancel: (requestId, reason) => registry.cancel(requestId, reason),
    settled (settlement) {
      const workerId = routing.settled(settlement.requestId)
      const reason = cancelCause(settlement)
      // Tells the worker to stop spending on an answer nobody will read: the one it went to
      // alone when it was announced (contract v1.1), else every worker.
      if (reason !== null) publishCancel(workerId === null ? topics.chatCancel : topics.chatCancelFor(workerId), settlement.requestId, reason)
    },
    detach: (requestId) => registry.detach(requestId),
    attach: (requestId) => registry.attach(requestId),
    refuseNew () { refusing = true },
    workerOffline: (workerId) => { routing.workerOffline(workerId) }
  }
}
