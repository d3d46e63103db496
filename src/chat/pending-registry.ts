/**
 * Every chat request in flight, each one a pending-request actor. The registry enforces the
 * caps, routes replies to their actor, and frees an entry on whichever final state its actor
 * reaches (reply, deadline, abort, link loss, shutdown) — there is no other way out.
 */
import { createActor, fromCallback, type Actor, type AnyActorRef } from 'xstate'
import {
  pendingRequestMachine,
  type FailureCause,
  type PendingContext,
  type PendingOutcome
} from '../../machines/pending-request.machine.js'
import type { Clock } from '../clock.js'
import type { ReplyEnvelope } from '../mqtt/protocol.js'
import { createRecentIds } from './recent-ids.js'

export interface Settlement {
  requestId: string
  sessionId: string
  outcome: PendingOutcome
  cause: FailureCause | null
  /** done: the full reply; failed by the worker: its error message. */
  text: string | null
  startedAt: number
  settledAt: number
}

export interface PendingCallbacks {
  onChunk?: (delta: string) => void
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
  cancel: (requestId: string) => boolean
  failAll: (cause: 'link_down' | 'shutdown') => number
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

  function release (context: PendingContext, outcome: PendingOutcome): void {
    const entry = entries.get(context.requestId)
    if (entry === undefined) return
    entries.delete(context.requestId)
    clock.clearTimeout(entry.deadline)
    perSession.remove(entry.sessionId)
    perUser.remove(entry.userId)
    recent.add(context.requestId)
    const settlement: Settlement = {
      requestId: context.requestId,
      sessionId: entry.sessionId,
      outcome,
      cause: context.cause,
      text: context.text,
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
        const onChunk = entries.get(context.requestId)?.callbacks.onChunk
        if (onChunk !== undefined) guard('onChunk', () => { onChunk(event.delta) })
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
      entries.set(requestId, { actor, deadline, sessionId, userId, startedAt: clock.now(), callbacks })
      perSession.add(sessionId)
      perUser.add(userId)
      actor.start()
    },
    deliver (reply) {
      const entry = entries.get(reply.request_id)
      if (entry === undefined) return recent.has(reply.request_id) ? 'duplicate' : 'unknown'
      switch (reply.type) {
        case 'chunk': entry.actor.send({ type: 'CHUNK', delta: reply.delta }); break
        case 'done': entry.actor.send({ type: 'DONE', content: reply.content }); break
        case 'error': entry.actor.send({ type: 'ERROR', error: reply.error }); break
      }
      return 'delivered'
    },
    cancel (requestId) {
      const entry = entries.get(requestId)
      if (entry === undefined) return false
      entry.actor.send({ type: 'ABORT' })
      return true
    },
    failAll (cause) {
      const event = cause === 'link_down' ? { type: 'LINK_DOWN' as const } : { type: 'SHUTDOWN' as const }
      const actors = [...entries.values()].map((e) => e.actor)
      for (const actor of actors) actor.send(event)
      return actors.length
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
