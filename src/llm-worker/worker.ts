/**
 * The request loop: takes chat requests off MQTT, runs each through the upstream model server
 * within its deadline and a bounded number of slots, and streams the answer back on the
 * request's `reply_to` (docs/protocol.md, docs/worker.md).
 *
 * A request ends in exactly one of: `done`; `error` (upstream failure, overload, shutdown);
 * or silence, when nobody is listening any more: its deadline passed (the gateway has already
 * answered 504), the gateway cancelled it (`llm/chat/cancel`: Stop pressed, client gone, a
 * stall), or the link went down (the reply topic belongs to a clean session). In each silent
 * case the upstream call is aborted, so the model server stops generating too.
 */
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { parseCancel, parseResume, type ChatRequestEnvelope, type ReplyEnvelope } from '../mqtt/protocol.js'
import { createSlots } from './concurrency.js'
import { UpstreamError, type Upstream } from './openai-stream.js'
import { createPresence } from './presence.js'
import { createReplyPublisher, type WorkerLink } from './reply-publisher.js'
import { busyReply, chunkReply, doneReply, errorReply, parseChatRequest } from './request-envelope.js'
import type { WorkerTopics } from './worker-topics.js'

/** Refusal on the shared topic (v1 gateways); a request sent to this worker alone gets `busy`. */
export const OVERLOADED = 'worker overloaded'
export const SHUTTING_DOWN = 'worker shutting down'

export interface LlmWorkerOptions {
  link: WorkerLink
  topics: WorkerTopics
  upstream: Upstream
  /** Upstream calls in flight at once. */
  concurrency: number
  /** Requests waiting for a slot; beyond it, `error` "worker overloaded" at once. */
  queue: number
  clock: Clock
  log: Logger
  /**
   * Announce (contract v1.1): heartbeats on the presence topic, requests on the worker's own
   * topic acknowledged with `ack` and refused with `busy`, replies stamped with the worker id.
   */
  announce?: { workerId: string, heartbeatMs: number }
}

export interface WorkerStats {
  received: number
  completed: number
  /** An `error` reply for an upstream failure. */
  failed: number
  /** Dropped because the deadline passed, before or while waiting for a slot. */
  expired: number
  /** Aborted mid-call because the deadline passed. */
  timedOut: number
  overloaded: number
  malformed: number
  /** Abandoned because the link went down. */
  linkLost: number
  /** Aborted by shutdown after the grace period. */
  shutDown: number
  /** Stopped by a cancel from the gateway (before or during the upstream call). */
  cancelled: number
  active: number
  waiting: number
}

export interface LlmWorker {
  /** Subscribes; the link (started by the caller) restores the subscription on every reconnect. */
  start: () => void
  /**
   * Unsubscribes, lets accepted requests finish for `graceMs`, then aborts the rest with an
   * `error` "worker shutting down". Resolves when nothing is in flight; the caller then stops
   * the link (DISCONNECT), which waits for the last PUBACKs.
   */
  stop: (graceMs: number) => Promise<void>
  stats: () => WorkerStats
}

type StopReason = 'deadline' | 'link-down' | 'shutdown' | 'cancelled'

interface Job {
  readonly request: ChatRequestEnvelope
  readonly controller: AbortController
  timer: unknown
  running: boolean
  stopReason: StopReason | null
  /** Chunks sent so far: the next one's seq is this plus one. */
  seq: number
  /** Their text, kept for a gateway that resumes the stream (several gateways, v1.1). */
  parts: string[]
  /** Where replies go: the request's `reply_to`, until another gateway resumes the stream. */
  replyTo: string
  /** The `done` or `error` sent, kept with the chunks for a while after the end. */
  end: ReplyEnvelope | null
}

/** What a resume needs of a request: who made it, its deadline, what was sent. */
interface KeptStream {
  requestId: string
  sessionId: string
  userId: string
  deadline: number
  parts: string[]
  end: ReplyEnvelope | null
}

/** How long a finished request's chunks are kept for a resume, and how many at most. */
export const RESUME_RETAIN_MS = 60_000
export const RESUME_RETAIN_MAX = 256

type Counter = Exclude<keyof WorkerStats, 'active' | 'waiting'>

export function createLlmWorker (options: LlmWorkerOptions): LlmWorker {
  const { link, topics, upstream, clock, log } = options
  const announce = options.announce
  const replies = createReplyPublisher(link, announce?.workerId)
  const slots = createSlots<Job>({
    concurrency: options.concurrency,
    queue: options.queue,
    run: async (job) => {
      try { await run(job) } catch (err) {
        // Only a bug gets here (run catches the upstream's failures): free the job regardless.
        log.error({ request_id: job.request.request_id, err: (err as Error)?.stack ?? String(err) }, 'worker bug')
        finish(job)
      }
    }
  })
  const jobs = new Set<Job>()
  const counts: Record<Counter, number> = {
    received: 0, completed: 0, failed: 0, expired: 0, timedOut: 0, overloaded: 0, malformed: 0, linkLost: 0, shutDown: 0, cancelled: 0
  }
  // The same jobs by request id, for cancels and resumes.
  const byId = new Map<string, Job>()
  // Finished ones, oldest first, for a gateway that resumes a stream after its end was sent:
  // what a resume needs of them, not the request's history.
  const finished = new Map<string, { kept: KeptStream, at: number }>()
  let started = false
  // What the worker announces it takes at once: its slots and its waiting line.
  const capacity = options.concurrency + options.queue
  const presence = announce === undefined
    ? null
    : createPresence({ link, topic: topics.presence, workerId: announce.workerId, heartbeatMs: announce.heartbeatMs, capacity, inFlight: () => jobs.size, clock })
  let stopping: Promise<void> | null = null
  let idleWaiters: Array<() => void> = []

  function send (job: Job, reply: ReplyEnvelope): boolean {
    if (reply.type === 'chunk') job.parts.push(reply.delta)
    else if (reply.type === 'done' || reply.type === 'error') job.end = reply
    if (replies.publish(job.replyTo, reply) !== 'lost') return true
    halt(job, 'link-down')
    return false
  }

  function finish (job: Job): void {
    clock.clearTimeout(job.timer)
    jobs.delete(job)
    if (byId.get(job.request.request_id) === job) byId.delete(job.request.request_id)
    if (job.end !== null) {
      const { request_id: requestId, session_id: sessionId, user_id: userId, deadline } = job.request
      finished.set(requestId, { kept: { requestId, sessionId, userId, deadline, parts: job.parts, end: job.end }, at: clock.now() })
      for (const [id, f] of finished) {
        if (finished.size <= RESUME_RETAIN_MAX && clock.now() - f.at < RESUME_RETAIN_MS) break
        finished.delete(id)
      }
    }
    if (jobs.size === 0) {
      const waiters = idleWaiters
      idleWaiters = []
      for (const resolve of waiters) resolve()
    }
  }

  /** Stops a job for a reason that is not the upstream's: the first reason wins. */
  function halt (job: Job, reason: StopReason): void {
    if (job.stopReason !== null) return
    job.stopReason = reason
    if (job.running) { job.controller.abort(reason); return }
    // Still waiting for a slot: it never started, so it ends here.
    slots.withdraw(job)
    const { request_id: requestId } = job.request
    if (reason === 'deadline') {
      counts.expired++
      log.info({ request_id: requestId }, 'request dropped: deadline passed while waiting for a slot')
    } else if (reason === 'shutdown') {
      counts.shutDown++
      replies.publish(job.replyTo, errorReply(requestId, SHUTTING_DOWN))
    } else if (reason === 'cancelled') {
      counts.cancelled++
      log.info({ request_id: requestId }, 'request cancelled by the gateway while waiting for a slot')
    } else {
      counts.linkLost++
    }
    finish(job)
  }

  async function run (job: Job): Promise<void> {
    if (job.stopReason !== null) return
    job.running = true
    const { request } = job
    const signal = job.controller.signal
    const began = clock.now()
    let text = ''
    let failure: string | null = null
    try {
      for await (const delta of upstream.stream({ history: request.history, content: request.content }, signal)) {
        if (signal.aborted) break
        if (delta === '') continue
        text += delta
        if (!send(job, chunkReply(request.request_id, delta, ++job.seq))) break
      }
    } catch (err) {
      if (!signal.aborted) {
        failure = err instanceof UpstreamError ? err.message : 'worker failed: internal error'
        if (!(err instanceof UpstreamError)) log.error({ request_id: request.request_id, err: (err as Error)?.stack ?? String(err) }, 'worker bug while streaming')
      }
    }
    const ms = clock.now() - began
    // Read again: halt() may have set it while the stream was awaited.
    const reason = job.stopReason as StopReason | null
    switch (reason) {
      case null:
        if (failure === null) {
          counts.completed++
          send(job, doneReply(request.request_id, text))
          log.debug({ request_id: request.request_id, ms, chars: text.length }, 'request done')
        } else {
          counts.failed++
          send(job, errorReply(request.request_id, failure))
          log.warn({ request_id: request.request_id, ms, error: failure }, 'upstream failed; error reply sent')
        }
        break
      case 'deadline':
        counts.timedOut++
        log.info({ request_id: request.request_id, ms }, 'deadline passed mid-call: upstream aborted, nothing more sent')
        break
      case 'link-down':
        counts.linkLost++
        log.info({ request_id: request.request_id, ms }, 'link down mid-call: upstream aborted')
        break
      case 'shutdown':
        counts.shutDown++
        replies.publish(job.replyTo, errorReply(request.request_id, SHUTTING_DOWN))
        break
      case 'cancelled':
        counts.cancelled++
        log.info({ request_id: request.request_id, ms, chunks: job.seq }, 'cancelled by the gateway mid-call: upstream aborted, nothing more sent')
        break
    }
    finish(job)
  }

  function onRequest (payload: Buffer, topic: string): void {
    counts.received++
    // Sent to this worker alone by a gateway that counts on an ack or a `busy`.
    const direct = announce !== undefined && topic === topics.direct
    const parsed = parseChatRequest(payload, topics.replyPrefix)
    if (!parsed.ok) {
      if (parsed.reason === 'version') return
      counts.malformed++
      log.warn({ problem: parsed.problem, request_id: parsed.requestId }, 'malformed request')
      if (parsed.replyTo !== undefined && parsed.requestId !== undefined) {
        replies.publish(parsed.replyTo, errorReply(parsed.requestId, `malformed request: ${parsed.problem}`))
      }
      return
    }
    const { request } = parsed
    // A message already on its way when we unsubscribed: answer at once rather than let it time out.
    if (stopping !== null) {
      // A gateway that sent it here alone can still move it to a worker that is not stopping.
      replies.publish(request.reply_to, direct ? busyReply(request.request_id) : errorReply(request.request_id, SHUTTING_DOWN))
      return
    }
    // A QoS 1 redelivery of a request already taken: the first one answers it.
    if (byId.has(request.request_id)) {
      log.debug({ request_id: request.request_id }, 'duplicate request dropped')
      return
    }
    if (direct && slots.active + slots.waiting >= capacity) {
      counts.overloaded++
      replies.publish(request.reply_to, busyReply(request.request_id))
      return
    }
    const left = request.deadline - clock.now()
    if (left <= 0) {
      counts.expired++
      log.info({ request_id: request.request_id, late_ms: -left }, 'request dropped: deadline already passed')
      return
    }
    const job: Job = { request, controller: new AbortController(), timer: null, running: false, stopReason: null, seq: 0, parts: [], replyTo: request.reply_to, end: null }
    jobs.add(job)
    byId.set(request.request_id, job)
    job.timer = clock.setTimeout(() => { halt(job, 'deadline') }, left)
    // Taken: said before any chunk, so the gateway stops holding the request for another worker.
    if (direct && announce !== undefined) replies.publishLight(request.reply_to, { v: 1, request_id: request.request_id, type: 'ack', worker_id: announce.workerId })
    if (slots.offer(job) === 'full') {
      counts.overloaded++
      log.warn({ request_id: request.request_id, active: slots.active, waiting: slots.waiting }, 'worker overloaded: request refused')
      replies.publish(request.reply_to, errorReply(request.request_id, OVERLOADED))
      finish(job)
    }
  }

  function onCancel (payload: Buffer): void {
    const cancel = parseCancel(payload)
    if (cancel === null) return
    // Every worker hears every cancel (the topic is never shared): most are for other workers.
    const job = byId.get(cancel.request_id)
    if (job === undefined) return
    log.debug({ request_id: cancel.request_id, reason: cancel.reason }, 'cancel received')
    halt(job, 'cancelled')
  }

  /**
   * A gateway took over a stream whose gateway went away (contract v1.1, several gateways): if
   * this worker runs it, or ran it within RESUME_RETAIN_MS, it says `resumed`, re-sends every
   * chunk after `after_seq` (and the end, if sent) to the new gateway, and answers there from now
   * on. Only for the user the request was made by; every other worker stays silent.
   */
  function onResume (payload: Buffer): void {
    const resume = parseResume(payload)
    if (resume === null || !resume.reply_to.startsWith(topics.replyPrefix)) return
    const live = byId.get(resume.request_id)
    const old = finished.get(resume.request_id)
    const kept: KeptStream | undefined = live !== undefined
      ? { requestId: live.request.request_id, sessionId: live.request.session_id, userId: live.request.user_id, deadline: live.request.deadline, parts: live.parts, end: live.end }
      : (old !== undefined && clock.now() - old.at < RESUME_RETAIN_MS ? old.kept : undefined)
    if (kept === undefined) return
    if (resume.user_id !== null && resume.user_id !== kept.userId) return
    const to = resume.reply_to
    if (live !== undefined && live.replyTo !== to) {
      // The gateway it leaves lets its chat go on this (and sends no cancel); said before the
      // move, on the same topic as everything it had from here.
      replies.publish(live.replyTo, { v: 1, request_id: kept.requestId, type: 'moved', to: resume.from })
      live.replyTo = to
    }
    log.info({ request_id: kept.requestId, to: resume.from, after_seq: resume.after_seq, finished: live === undefined }, 'stream resumed by another gateway')
    replies.publish(to, { v: 1, request_id: kept.requestId, type: 'resumed', session_id: kept.sessionId, user_id: kept.userId, deadline: kept.deadline })
    for (let seq = resume.after_seq + 1; seq <= kept.parts.length; seq++) replies.publish(to, chunkReply(kept.requestId, kept.parts[seq - 1] as string, seq))
    if (kept.end !== null) replies.publish(to, kept.end)
  }

  function onDown (): void {
    // Replies to in-flight requests cannot be delivered on a clean session: stop paying for them.
    for (const job of [...jobs]) halt(job, 'link-down')
  }

  function idle (): Promise<void> {
    if (jobs.size === 0) return Promise.resolve()
    return new Promise((resolve) => { idleWaiters.push(resolve) })
  }

  return {
    start () {
      if (started) return
      started = true
      link.events.on('down', onDown)
      link.subscribe(topics.subscription, 1, onRequest, { deliverAs: topics.requests })
      link.subscribe(topics.cancel, 1, onCancel)
      // Optional: a broker whose ACL predates resumes refuses them, and the worker works on without.
      link.subscribe(topics.resume, 1, onResume, { optional: true })
      if (announce !== undefined) {
        link.subscribe(topics.direct, 1, onRequest)
        link.subscribe(topics.directCancel, 1, onCancel)
        link.subscribe(topics.directResume, 1, onResume, { optional: true })
        presence?.start()
      }
    },
    stop (graceMs) {
      stopping ??= (async () => {
        if (started) link.unsubscribe(topics.subscription)
        presence?.drain()
        if (jobs.size > 0) {
          log.info({ in_flight: jobs.size, grace_ms: graceMs }, 'stopping: letting in-flight requests finish')
          let timer: unknown = null
          const graceOver = new Promise<void>((resolve) => { timer = clock.setTimeout(resolve, graceMs) })
          await Promise.race([idle(), graceOver])
          clock.clearTimeout(timer)
          if (jobs.size > 0) log.warn({ aborted: jobs.size }, 'grace period over: aborting the rest')
          // Waiting ones first, so a freed slot does not start one of them.
          const order = [...slots.waitingItems(), ...jobs]
          for (const job of order) halt(job, 'shutdown')
          await idle()
        }
        link.events.off('down', onDown)
        if (started) {
          if (announce !== undefined) link.unsubscribe(topics.direct)
          presence?.stop()
          link.unsubscribe(topics.cancel)
          link.unsubscribe(topics.resume)
          if (announce !== undefined) { link.unsubscribe(topics.directCancel); link.unsubscribe(topics.directResume) }
        }
        replies.close()
      })()
      return stopping
    },
    stats: () => ({ ...counts, active: slots.active, waiting: slots.waiting })
  }
}
