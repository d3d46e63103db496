/**
 * Resume on any gateway (contract v1.1, "Several gateways"). A client whose connection moved to
 * this gateway asks for a stream another one started; this gateway finds it in three steps:
 *
 * 1. It asks the other gateways on `<prefix>/cluster/resume`. The one that holds the stream
 *    answers: a finished stream it still keeps comes back whole in one `replay`; for a live one
 *    it says `handover` and asks the stream's worker to answer here instead. It lets its own chat
 *    go (nothing answered, stored or cancelled there) only when the worker says `moved`: a
 *    worker that cannot resume leaves the stream where it was, never with nobody.
 * 2. Nobody answered within CLUSTER_HANDOVER_WAIT_MS (the gateway that held it is gone): it asks
 *    the workers on `<prefix>/chat/resume`. The worker that runs (or just ran) the request says
 *    `resumed`, re-sends every chunk from the first and goes on answering here.
 * 3. Nothing within STREAM_TAKEOVER_TIMEOUT_MS of the ask: the stream ends `stream_interrupted`.
 *
 * A stream taken over is a chat of this gateway from then on (src/chat/run-chat.ts adoptChat):
 * its deadline is the request's own, its caps are this gateway's, and it is stored here. The
 * client's listener hears only the chunks after the `after_seq` it asked from.
 */
import type { Clock } from '../clock.js'
import type { Dispatcher } from '../chat/dispatcher.js'
import type { Stream, StreamEnd, StreamListener, StreamStore } from '../chat/stream-store.js'
import type { ChatSink } from '../chat/run-chat.js'
import { ERRORS, TetherError, type ErrorCode } from '../errors.js'
import type { Logger } from '../log.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import { encodeCancel, encodeResume, parseResume, type ReplayEnd, type ResumeEnvelope, type ResumeReply } from '../mqtt/protocol.js'
import type { Topics } from '../mqtt/topics.js'

/** How a lookup ended, for the metrics: `replayed`/`handed_over` by a gateway, `worker` by a worker, or not at all. */
export type TakeoverResult = 'replayed' | 'handed_over' | 'worker' | 'interrupted' | 'refused'
/** What this gateway did when another asked for a stream it holds. */
export type HandoffResult = 'replayed' | 'handed_over'

export interface FindRequest {
  requestId: string
  /** Who asks (null: relay mode, where the request id alone is the key). */
  ownerId: string | null
  listener: StreamListener
  afterSeq: number
  /** The client's connection closed meanwhile: a stream taken over starts detached (its resume grace runs). */
  gone: () => boolean
  /** Called once (unless aborted): the stream, now this gateway's, or why there is none. */
  done: (outcome: Stream | TetherError) => void
}

/** What the transports see of it: `find` answers null when the cluster is not asked (the stream is simply not found). */
export interface RemoteStreams {
  find: (request: FindRequest) => (() => void) | null
}

export interface StreamResumeOptions {
  link: Pick<MqttLink, 'publish' | 'subscribe' | 'unsubscribe' | 'isUp'>
  topics: Topics
  instanceId: string
  streams: StreamStore
  chat: Pick<Dispatcher, 'workerOf'>
  /** Takes the chat over (run-chat.ts adoptChat with this gateway's chat path); throws a TetherError (caps). */
  adopt: (turn: { requestId: string, userId: string, sessionId: string }, worker: { workerId: string | null, deadline: number }, sink: ChatSink) => void
  clock: Clock
  log: Logger
  handoverWaitMs: number
  takeoverTimeoutMs: number
  /** Lookups in flight at once; past it a resume is refused 429. */
  maxLookups?: number
  /** Lookups in flight at once for one user (MAX_PENDING_PER_USER); past it their resumes are refused 429. */
  maxLookupsPerOwner?: number
  onTakeover?: (result: TakeoverResult) => void
  onHandoff?: (result: HandoffResult) => void
}

export interface StreamResume {
  start: () => void
  stop: () => void
  /** Looks for a stream this gateway does not hold; the returned function stops looking. */
  find: (request: FindRequest) => () => void
  /** A `resumed`, `handover` or `replay` on this gateway's reply topic (the dispatcher's onResumeReply); false: nobody asked. */
  onReply: (reply: ResumeReply) => boolean
  /** Lookups in flight. */
  readonly size: number
}

interface Lookup {
  request: FindRequest
  startedAt: number
  timer: unknown
  /** A gateway said it handed the stream over: its worker's `resumed` is on its way. */
  handedOver: boolean
  /**
   * The client left while it ran. A worker may already be moving the stream here, so the lookup
   * runs on: a stream that arrives is adopted detached (its resume grace, then a cancel), so
   * that no chat is left with nobody to end it; nothing is answered.
   */
  abandoned: boolean
}

const DEFAULT_MAX_LOOKUPS = 1000
const DEFAULT_MAX_LOOKUPS_PER_OWNER = 4

function endOf (end: ReplayEnd): StreamEnd {
  if (end.type === 'done') return { type: 'done', messageId: end.message_id, content: end.content, latencyMs: 0 }
  const code: ErrorCode = Object.hasOwn(ERRORS, end.error) ? end.error as ErrorCode : 'llm_error'
  return { type: 'error', failure: { code, status: ERRORS[code].status, message: end.message } }
}

function replayEndOf (end: StreamEnd): ReplayEnd {
  return end.type === 'done'
    ? { type: 'done', message_id: end.messageId, content: end.content }
    : { type: 'error', error: end.failure.code, message: end.failure.message }
}

/** Bytes a replay may take on the wire: brokers refuse large messages (deploy/mosquitto: 1 MiB). */
const MAX_REPLAY_BYTES = 900 * 1024

export function createStreamResume (options: StreamResumeOptions): StreamResume {
  const { link, topics, instanceId, streams, clock, log } = options
  const lookups = new Map<string, Lookup>()
  const replyPrefix = topics.replyTo.slice(0, topics.replyTo.length - instanceId.length)
  const maxLookups = options.maxLookups ?? DEFAULT_MAX_LOOKUPS
  const maxPerOwner = options.maxLookupsPerOwner ?? DEFAULT_MAX_LOOKUPS_PER_OWNER
  const perOwner = new Map<string, number>()

  function end (requestId: string, lookup: Lookup, outcome: Stream | TetherError, result: TakeoverResult): void {
    if (lookups.get(requestId) !== lookup) return
    lookups.delete(requestId)
    const owner = lookup.request.ownerId
    if (owner !== null) {
      const n = (perOwner.get(owner) ?? 1) - 1
      if (n <= 0) perOwner.delete(owner)
      else perOwner.set(owner, n)
    }
    if (lookup.timer !== null) clock.clearTimeout(lookup.timer)
    options.onTakeover?.(result)
    if (!lookup.abandoned) lookup.request.done(outcome)
  }

  function interrupted (requestId: string, lookup: Lookup): void {
    log.info({ request_id: requestId, ms: clock.now() - lookup.startedAt }, 'stream not found on any gateway or worker: interrupted')
    end(requestId, lookup, new TetherError('stream_interrupted'), 'interrupted')
  }

  function ask (topic: string, requestId: string, lookup: Lookup, afterSeq: number): void {
    const resume: ResumeEnvelope = { v: 1, request_id: requestId, reply_to: topics.replyTo, after_seq: afterSeq, user_id: lookup.request.ownerId, from: instanceId }
    link.publish(topic, encodeResume(resume), 1)
  }

  /** From now on the lookup waits for a worker's `resumed` until STREAM_TAKEOVER_TIMEOUT_MS after it began. */
  function awaitWorkerUntilBound (requestId: string, lookup: Lookup): void {
    if (lookup.timer !== null) clock.clearTimeout(lookup.timer)
    lookup.timer = clock.setTimeout(() => { lookup.timer = null; interrupted(requestId, lookup) }, Math.max(0, lookup.startedAt + options.takeoverTimeoutMs - clock.now()))
  }

  function askWorkers (requestId: string, lookup: Lookup): void {
    awaitWorkerUntilBound(requestId, lookup)
    // From the first chunk: the whole answer is then here to store, whatever the client saw.
    ask(topics.chatResume, requestId, lookup, 0)
  }

  /** The stream as the other gateway kept it, finished: kept here now, replayed to the client. */
  function replayed (requestId: string, lookup: Lookup, chunks: string[], replayEnd: ReplayEnd): void {
    const { request } = lookup
    const stream = streams.open(requestId, request.ownerId, request.listener, request.afterSeq)
    stream.sink.submitted?.()
    chunks.forEach((delta, i) => { stream.sink.chunk?.(delta, i + 1) })
    const streamEnd = endOf(replayEnd)
    if (streamEnd.type === 'done') stream.sink.done(streamEnd)
    else stream.sink.fail(new TetherError(streamEnd.failure.code, streamEnd.failure.message))
    end(requestId, lookup, stream, 'replayed')
  }

  /**
   * The worker answers here now. Synchronous: its re-sent chunks follow its `resumed` at once and
   * must find the chat open. The worker only resumes for the user the request was made by (it
   * has the request); workers are trusted with sessions as they are with the answers themselves.
   */
  function adopt (requestId: string, lookup: Lookup, reply: Extract<ResumeReply, { type: 'resumed' }>): boolean {
    const { request } = lookup
    const workerId = reply.worker_id ?? null
    if (request.ownerId !== null && request.ownerId !== reply.user_id) {
      log.warn({ request_id: requestId, worker_id: workerId }, 'a worker resumed a stream for another user than the one asking: ignored')
      return false
    }
    const refuse = (err: TetherError): void => {
      // The worker now answers here and nobody will read it: it is told to stop.
      link.publish(workerId === null ? topics.chatCancel : topics.chatCancelFor(workerId), encodeCancel({ v: 1, request_id: requestId, reason: 'client_gone' }), 1)
      end(requestId, lookup, err, 'refused')
    }
    const stream = streams.open(requestId, request.ownerId, request.listener, request.afterSeq)
    try {
      options.adopt({ requestId, userId: reply.user_id, sessionId: reply.session_id }, { workerId, deadline: reply.deadline }, stream.sink)
    } catch (err) {
      stream.sink.abandoned?.()
      refuse(err instanceof TetherError ? err : new TetherError('internal_error'))
      return true
    }
    if (lookup.abandoned || request.gone()) stream.detach(request.listener)
    log.info({ request_id: requestId, worker_id: workerId, handed_over: lookup.handedOver, ms: clock.now() - lookup.startedAt }, 'stream taken over from another gateway')
    end(requestId, lookup, stream, lookup.handedOver ? 'handed_over' : 'worker')
    return true
  }

  /** Another gateway asks for a stream: this one answers only if it holds it for that user. */
  function onClusterResume (payload: Buffer): void {
    const resume = parseResume(payload)
    if (resume === null || resume.from === instanceId || !resume.reply_to.startsWith(replyPrefix)) return
    const { request_id: requestId } = resume
    const snapshot = streams.snapshot(requestId, resume.user_id)
    if (snapshot !== null) {
      const message = JSON.stringify({ v: 1, request_id: requestId, type: 'replay', from: instanceId, chunks: snapshot.chunks, end: replayEndOf(snapshot.end) })
      // Too large to send whole: the worker, if it still has it, is the way.
      if (Buffer.byteLength(message) > MAX_REPLAY_BYTES) return
      if (link.publish(resume.reply_to, message, 1)) options.onHandoff?.('replayed')
      return
    }
    const stream = streams.get(requestId, resume.user_id)
    if (stream === null || stream.settled) return
    // The worker is asked to answer the other gateway; this gateway's chat goes only when the
    // worker says `moved` (the dispatcher), so a worker that cannot resume leaves it here.
    const workerId = options.chat.workerOf(requestId)
    link.publish(resume.reply_to, JSON.stringify({ v: 1, request_id: requestId, type: 'handover', from: instanceId }), 1)
    link.publish(workerId === null ? topics.chatResume : topics.chatResumeFor(workerId), encodeResume({ ...resume, after_seq: 0 }), 1)
    options.onHandoff?.('handed_over')
    log.info({ request_id: requestId, to: resume.from, worker_id: workerId }, 'stream asked for by another gateway: its worker is asked to answer there')
  }

  return {
    // Optional: a broker whose ACL predates it refuses it, and the link must not fall for that.
    start () { link.subscribe(topics.clusterResume, 1, onClusterResume, { optional: true }) },
    stop () {
      link.unsubscribe(topics.clusterResume)
      for (const [requestId, lookup] of [...lookups]) end(requestId, lookup, new TetherError('shutting_down'), 'refused')
    },
    find (request) {
      const { requestId } = request
      const refuse = (err: TetherError): () => void => { options.onTakeover?.('refused'); request.done(err); return () => {} }
      if (lookups.has(requestId)) return refuse(new TetherError('invalid_request', `Request ${requestId} is already being resumed.`))
      if (lookups.size >= maxLookups) return refuse(new TetherError('too_many_requests', 'Too many streams being resumed at once; retry shortly.', 1))
      const owner = request.ownerId
      if (owner !== null && (perOwner.get(owner) ?? 0) >= maxPerOwner) return refuse(new TetherError('too_many_requests', 'Too many of your streams are being resumed at once; wait for one.', 1))
      if (!link.isUp) return refuse(new TetherError('llm_unavailable', undefined, 1))
      const lookup: Lookup = { request, startedAt: clock.now(), timer: null, handedOver: false, abandoned: false }
      lookups.set(requestId, lookup)
      if (owner !== null) perOwner.set(owner, (perOwner.get(owner) ?? 0) + 1)
      ask(topics.clusterResume, requestId, lookup, request.afterSeq)
      lookup.timer = clock.setTimeout(() => {
        lookup.timer = null
        if (!lookup.handedOver) askWorkers(requestId, lookup)
      }, options.handoverWaitMs)
      return () => { lookup.abandoned = true }
    },
    onReply (reply) {
      const lookup = lookups.get(reply.request_id)
      if (lookup === undefined) return false
      switch (reply.type) {
        case 'handover':
          if (!lookup.handedOver) {
            lookup.handedOver = true
            awaitWorkerUntilBound(reply.request_id, lookup)
          }
          return true
        case 'replay':
          // Finished: nothing runs that would need an owner.
          if (lookup.abandoned) end(reply.request_id, lookup, new TetherError('stream_not_found'), 'refused')
          else replayed(reply.request_id, lookup, reply.chunks, reply.end)
          return true
        case 'resumed':
          return adopt(reply.request_id, lookup, reply)
        // The dispatcher's (to the gateway the worker leaves), never a lookup's.
        case 'moved':
          return false
      }
    },
    get size () { return lookups.size }
  }
}
