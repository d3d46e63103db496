/**
 * Every chat request in flight, each one a pending-request actor. The registry enforces the
 * caps, routes replies to their actor, and frees an entry on whichever final state its actor
 * reaches (reply, deadline, abort, link loss, shutdown) — there is no other way out.
 */
import { createActor, fromCallback, type Actor, type AnyActorRef } from 'xstate'
import {
  pendingRequestMachine,
  type CancelReason,
  type FailureCause,
  type PendingContext,
  type PendingOutcome,
  type StallPhase
} from '../../machines/pending-request.machine.js'
import type { Clock } from '../clock.js'
import type { ReplyEnvelope } from '../mqtt/protocol.js'
import { createRecentIds } from './recent-ids.js'

export interface Settlement {
  requestId: string
  sessionId: string
  outcome: PendingOutcome
  cause: FailureCause | null
  /** cancelled: whether the client pressed Stop or went away. */
  cancelReason: CancelReason | null
  /** done: the full reply; failed by the worker: its error message. */
  text: string | null
  /** The chunks relayed before the end, joined: what the client saw of an unfinished answer. */
  partial: string
  /** How many chunks were relayed (the last `seq` the client saw). */
  chunks: number
  startedAt: number
  settledAt: number
}

export interface PendingCallbacks {
  /** A chunk, numbered 1, 2, 3 ... in the order relayed (the contract's `seq`). */
  onChunk?: (delta: string, seq: number) => void
  onSettle: (settlement: Settlement) => void
}

export type Admission = 'ok' | 'total_cap' | 'session_cap' | 'user_cap'
export type Delivery = 'delivered' | 'unknown' | 'duplicate'

export interface PendingRegistryOptions {
  maxPending: number
  maxPendingPerSession: number
  /** Fair share: one user's chats in flight over all sessions (MAX_PENDING_PER_USER). */
  maxPendingPerUser?: number
  clock: Clock
  /** Called after every settlement, for metrics and logs. */
  onSettled?: (settlement: Settlement) => void
  /** How many settled ids to remember for telling duplicates from unknown replies. */
  recentCapacity?: number
  /** Bound on the wait for the first chunk or `done` (CHAT_FIRST_CHUNK_TIMEOUT_MS); 0 or absent: none. */
  firstChunkTimeoutMs?: number
  /** Bound on the silence between chunks once a stream has begun (CHAT_IDLE_TIMEOUT_MS); 0 or absent: none. */
  idleTimeoutMs?: number
  /** How long a detached stream waits for its client to come back (STREAM_RESUME_GRACE_MS). */
  resumeGraceMs?: number
  /**
   * A caller's callback threw (a write to a socket that closed under it, say). The registry
   * catches it so that the request still leaves through its settlement; this reports it.
   */
  onCallbackError?: (err: unknown, where: 'onChunk' | 'onSettle' | 'onSettled') => void
}

/**
 * `userId` names whose share a chat counts against; absent, the session id stands in (relay
 * mode has no users).
 */
export interface PendingRegistry {
  admit: (sessionId: string, userId?: string) => Admission
  /**
   * Holds a place under the caps for a chat that will open once its message is stored (an
   * await away), so that concurrent chats cannot all pass the caps first. Released by
   * open() for that session or by the returned function (idempotent).
   */
  reserve: (sessionId: string, userId?: string) => Exclude<Admission, 'ok'> | (() => void)
  /**
   * Holds one of the user's places (and one of the total) without a session's: for work done
   * before the session is known to be the user's (an ownership lookup), so that a flood of
   * chats naming unknown sessions is bounded by the user's share.
   */
  holdUser: (userId: string) => 'total_cap' | 'user_cap' | (() => void)
  open: (requestId: string, sessionId: string, timeoutMs: number, callbacks: PendingCallbacks, userId?: string) => void
  deliver: (reply: ReplyEnvelope) => Delivery
  /** Ends a chat for its client: `client_cancelled` (Stop) or `client_gone` (the default). */
  cancel: (requestId: string, reason?: CancelReason) => boolean
  /** The client's connection went: the chat waits STREAM_RESUME_GRACE_MS for it to come back. */
  detach: (requestId: string) => boolean
  /** The client came back (a resume) within the grace. */
  attach: (requestId: string) => boolean
  failAll: (cause: 'link_down' | 'shutdown') => number
  /** Another gateway took the stream over: the chat ends here with nothing answered, stored or cancelled. */
  handOver: (requestId: string) => boolean
  /** Ends one request for a routing reason (its worker was lost, or no worker could take it). */
  fail: (requestId: string, cause: 'worker_lost' | 'no_workers') => boolean
  readonly size: number
  countForSession: (sessionId: string) => number
  countForUser: (userId: string) => number
  bySession: () => Record<string, number>
  /** Sessions with at least one chat in flight. */
  sessionsInFlight: () => number
  /** When the oldest request in flight was opened (epoch ms), or null with none in flight. */
  inFlightSince: () => number | null
  /** Resolves once nothing is in flight. */
  whenEmpty: () => Promise<void>
}

interface Entry {
  actor: Actor<typeof pendingRequestMachine>
  deadline: unknown
  sessionId: string
  userId: string
  startedAt: number
  callbacks: PendingCallbacks
  /** The highest `seq` the worker sent; a chunk at or below it is a redelivery. */
  workerSeq: number
  /** Chunks relayed so far, and their text (kept for the partial answer; null until the first). */
  relayed: number
  parts: string[] | null
  /** When the stall bound runs out (epoch ms), 0 when none is armed; its one lazy timer and when that fires. */
  stallDue: number
  stallTimer: unknown
  stallTimerAt: number
  grace: unknown
}

/** A count per key that forgets keys at zero, so idle sessions and users cost nothing. */
function tally (): { get: (key: string) => number, add: (key: string) => void, remove: (key: string) => void, entries: () => Map<string, number> } {
  const counts = new Map<string, number>()
  return {
    get: (key) => counts.get(key) ?? 0,
    add (key) { counts.set(key, (counts.get(key) ?? 0) + 1) },
    remove (key) {
      const n = counts.get(key) ?? 0
      if (n <= 1) counts.delete(key)
      else counts.set(key, n - 1)
    },
    entries: () => counts
  }
}

export function createPendingRegistry (options: PendingRegistryOptions): PendingRegistry {
  const { clock } = options
  // Insertion order is age order: the first entry is the oldest request in flight.
  const entries = new Map<string, Entry>()
  const perSession = tally()
  const perUser = tally()
  // Places held by reserve() and not yet opened or released, in total, per session and per user.
  const reservedBySession = tally()
  const reservedByUser = tally()
  let reservedTotal = 0
  const maxPerUser = options.maxPendingPerUser ?? Number.POSITIVE_INFINITY

  /** Takes a place (the session's too, unless null); the returned release is idempotent. */
  function hold (sessionId: string | null, userId: string): () => void {
    if (sessionId !== null) reservedBySession.add(sessionId)
    reservedByUser.add(userId)
    reservedTotal++
    let held = true
    return () => {
      if (!held) return
      held = false
      if (sessionId !== null) reservedBySession.remove(sessionId)
      reservedByUser.remove(userId)
      reservedTotal--
    }
  }

  function admit (sessionId: string, userId = sessionId): Admission {
    if (entries.size + reservedTotal >= options.maxPending) return 'total_cap'
    if (perSession.get(sessionId) + reservedBySession.get(sessionId) >= options.maxPendingPerSession) return 'session_cap'
    if (perUser.get(userId) + reservedByUser.get(userId) >= maxPerUser) return 'user_cap'
    return 'ok'
  }
  const recent = createRecentIds(options.recentCapacity ?? 10_000)
  let emptyWaiters: (() => void)[] = []
  // Every request actor is a child of this one, so they share one XState system instead of
  // building a system, scheduler and registry each (half the heap of a pending request).
  // It ignores what children report: settling is done by the `settle` action.
  let root: AnyActorRef | null = null
  function parent (): AnyActorRef {
    if (root === null) {
      root = createActor(fromCallback(() => {}))
      root.start()
    }
    return root
  }

  function guard (where: 'onChunk' | 'onSettle' | 'onSettled', fn: () => void): void {
    try {
      fn()
    } catch (err) {
      options.onCallbackError?.(err, where)
    }
  }

  const firstChunkMs = options.firstChunkTimeoutMs ?? 0
  const idleMs = options.idleTimeoutMs ?? 0

  /**
   * One timer per request for both stall bounds, moved lazily: a chunk only moves the due
   * time, and the timer, when it runs, either stalls the request or waits out the rest. A
   * setTimeout per chunk would cost more than the chunk.
   */
  function armStall (entry: Entry, phase: StallPhase): void {
    const ms = phase === 'first' ? firstChunkMs : idleMs
    if (ms <= 0) { entry.stallDue = 0; return }
    entry.stallDue = clock.now() + ms
    // A later due time is waited out by the running timer; an earlier one (the idle bound
    // after a longer first-chunk bound) needs the timer moved.
    if (entry.stallTimer !== null && entry.stallTimerAt <= entry.stallDue) return
    if (entry.stallTimer !== null) clock.clearTimeout(entry.stallTimer)
    entry.stallTimerAt = entry.stallDue
    entry.stallTimer = clock.setTimeout(() => { checkStall(entry) }, ms)
  }
  function checkStall (entry: Entry): void {
    entry.stallTimer = null
    if (entry.stallDue === 0) return
    const left = entry.stallDue - clock.now()
    if (left <= 0) { entry.actor.send({ type: 'STALL' }); return }
    entry.stallTimerAt = entry.stallDue
    entry.stallTimer = clock.setTimeout(() => { checkStall(entry) }, left)
  }

  function release (context: PendingContext, outcome: PendingOutcome): void {
    const entry = entries.get(context.requestId)
    if (entry === undefined) return
    entries.delete(context.requestId)
    clock.clearTimeout(entry.deadline)
    if (entry.stallTimer !== null) clock.clearTimeout(entry.stallTimer)
    if (entry.grace !== null) clock.clearTimeout(entry.grace)
    perSession.remove(entry.sessionId)
    perUser.remove(entry.userId)
    recent.add(context.requestId)
    const settlement: Settlement = {
      requestId: context.requestId,
      sessionId: entry.sessionId,
      outcome,
      cause: context.cause,
      cancelReason: context.cancelReason,
      text: context.text,
      partial: entry.parts === null ? '' : entry.parts.join(''),
      chunks: entry.relayed,
      startedAt: entry.startedAt,
      settledAt: clock.now()
    }
    guard('onSettle', () => { entry.callbacks.onSettle(settlement) })
    guard('onSettled', () => { options.onSettled?.(settlement) })
    if (entries.size === 0 && emptyWaiters.length > 0) {
      const waiters = emptyWaiters
      emptyWaiters = []
      for (const w of waiters) w()
    }
  }

  const machine = pendingRequestMachine.provide({
    actions: {
      relayChunk: ({ context, event }) => {
        if (event.type !== 'CHUNK') return
        const entry = entries.get(context.requestId)
        if (entry === undefined) return
        const seq = ++entry.relayed
        // Allocated on the first chunk: ten thousand requests waiting for their first one is the
        // normal case, and the heap per pending request is a goal (docs/benchmarks.md).
        if (entry.parts === null) entry.parts = [event.delta]
        else entry.parts.push(event.delta)
        const onChunk = entry.callbacks.onChunk
        if (onChunk !== undefined) guard('onChunk', () => { onChunk(event.delta, seq) })
      },
      armStallTimer: ({ context }, { phase }) => {
        const entry = entries.get(context.requestId)
        if (entry !== undefined) armStall(entry, phase)
      },
      armGraceTimer: ({ context }) => {
        const entry = entries.get(context.requestId)
        if (entry === undefined || entry.grace !== null) return
        entry.grace = clock.setTimeout(() => { entry.grace = null; entry.actor.send({ type: 'GRACE_OVER' }) }, options.resumeGraceMs ?? 0)
      },
      disarmGraceTimer: ({ context }) => {
        const entry = entries.get(context.requestId)
        if (entry === undefined || entry.grace === null) return
        clock.clearTimeout(entry.grace)
        entry.grace = null
      },
      settle: ({ context }, { outcome }) => { release(context, outcome) }
    }
  })

  return {
    admit,
    reserve (sessionId, userId = sessionId) {
      const admission = admit(sessionId, userId)
      return admission === 'ok' ? hold(sessionId, userId) : admission
    },
    holdUser (userId) {
      if (entries.size + reservedTotal >= options.maxPending) return 'total_cap'
      if (perUser.get(userId) + reservedByUser.get(userId) >= maxPerUser) return 'user_cap'
      return hold(null, userId)
    },
    open (requestId, sessionId, timeoutMs, callbacks, userId = sessionId) {
      // Replacing a live entry would orphan its actor, whose deadline would later settle the
      // wrong callbacks. Ids are generated per request, so this is a bug, never traffic.
      if (entries.has(requestId)) throw new Error(`request ${requestId} is already in flight`)
      const actor = createActor(machine, { parent: parent(), input: { requestId } })
      const deadline = clock.setTimeout(() => { actor.send({ type: 'DEADLINE' }) }, timeoutMs)
      entries.set(requestId, { actor, deadline, sessionId, userId, startedAt: clock.now(), callbacks, workerSeq: 0, relayed: 0, parts: null, stallDue: 0, stallTimer: null, stallTimerAt: 0, grace: null })
      perSession.add(sessionId)
      perUser.add(userId)
      actor.start()
    },
    deliver (reply) {
      const entry = entries.get(reply.request_id)
      if (entry === undefined) return recent.has(reply.request_id) ? 'duplicate' : 'unknown'
      switch (reply.type) {
        case 'chunk':
          // A QoS 1 redelivery (or a worker repeating itself): the client has this one already.
          if (reply.seq !== undefined) {
            if (reply.seq <= entry.workerSeq) return 'duplicate'
            entry.workerSeq = reply.seq
          }
          entry.actor.send({ type: 'CHUNK', delta: reply.delta })
          break
        case 'done': entry.actor.send({ type: 'DONE', content: reply.content }); break
        case 'error': entry.actor.send({ type: 'ERROR', error: reply.error }); break
        // Acknowledgements are the routing's (src/chat/worker-routing.ts); one that gets here changes nothing.
        case 'ack': break
      }
      return 'delivered'
    },
    cancel (requestId, reason = 'client_gone') {
      const entry = entries.get(requestId)
      if (entry === undefined) return false
      entry.actor.send({ type: reason === 'client_cancelled' ? 'CANCEL' : 'ABORT' })
      return true
    },
    detach (requestId) {
      const entry = entries.get(requestId)
      if (entry === undefined) return false
      entry.actor.send({ type: 'DETACH' })
      return true
    },
    attach (requestId) {
      const entry = entries.get(requestId)
      if (entry === undefined) return false
      entry.actor.send({ type: 'ATTACH' })
      return true
    },
    failAll (cause) {
      const event = cause === 'link_down' ? { type: 'LINK_DOWN' as const } : { type: 'SHUTDOWN' as const }
      const actors = [...entries.values()].map((e) => e.actor)
      for (const actor of actors) actor.send(event)
      return actors.length
    },
    handOver (requestId) {
      const entry = entries.get(requestId)
      if (entry === undefined) return false
      entry.actor.send({ type: 'HANDED_OVER' })
      return true
    },
    fail (requestId, cause) {
      const entry = entries.get(requestId)
      if (entry === undefined) return false
      entry.actor.send({ type: cause === 'worker_lost' ? 'WORKER_LOST' : 'NO_WORKERS' })
      return true
    },
    get size () { return entries.size },
    countForSession: (sessionId) => perSession.get(sessionId),
    countForUser: (userId) => perUser.get(userId),
    bySession: () => Object.fromEntries(perSession.entries()),
    sessionsInFlight: () => perSession.entries().size,
    inFlightSince () {
      const first = entries.values().next()
      return first.done === true ? null : first.value.startedAt
    },
    whenEmpty () {
      if (entries.size === 0) return Promise.resolve()
      return new Promise<void>((resolve) => { emptyWaiters.push(resolve) })
    }
  }
}
