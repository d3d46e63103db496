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

export type Admission = 'ok' | 'total_cap' | 'session_cap'
export type Delivery = 'delivered' | 'unknown' | 'duplicate'

export interface PendingRegistryOptions {
  maxPending: number
  maxPendingPerSession: number
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

export interface PendingRegistry {
  admit: (sessionId: string) => Admission
  /**
   * Holds a place under the caps for a chat that will open once its message is stored (an
   * await away), so that concurrent chats cannot all pass the caps first. Released by
   * open() for that session or by the returned function (idempotent).
   */
  reserve: (sessionId: string) => Exclude<Admission, 'ok'> | (() => void)
  open: (requestId: string, sessionId: string, timeoutMs: number, callbacks: PendingCallbacks) => void
  deliver: (reply: ReplyEnvelope) => Delivery
  cancel: (requestId: string) => boolean
  failAll: (cause: 'link_down' | 'shutdown') => number
  readonly size: number
  countForSession: (sessionId: string) => number
  bySession: () => Record<string, number>
  /** When the oldest request in flight was opened (epoch ms), or null with none in flight. */
  inFlightSince: () => number | null
  /** Resolves once nothing is in flight. */
  whenEmpty: () => Promise<void>
}

interface Entry {
  actor: Actor<typeof pendingRequestMachine>
  deadline: unknown
  sessionId: string
  startedAt: number
  callbacks: PendingCallbacks
}

export function createPendingRegistry (options: PendingRegistryOptions): PendingRegistry {
  const { clock } = options
  // Insertion order is age order: the first entry is the oldest request in flight.
  const entries = new Map<string, Entry>()
  const perSession = new Map<string, number>()
  // Places held by reserve() and not yet opened or released, in total and per session.
  const reservedBySession = new Map<string, number>()
  let reservedTotal = 0

  function unreserve (sessionId: string): void {
    const n = reservedBySession.get(sessionId) ?? 0
    if (n <= 0) return
    if (n === 1) reservedBySession.delete(sessionId)
    else reservedBySession.set(sessionId, n - 1)
    reservedTotal--
  }

  function admit (sessionId: string): Admission {
    if (entries.size + reservedTotal >= options.maxPending) return 'total_cap'
    if ((perSession.get(sessionId) ?? 0) + (reservedBySession.get(sessionId) ?? 0) >= options.maxPendingPerSession) return 'session_cap'
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
    const left = (perSession.get(entry.sessionId) ?? 1) - 1
    if (left <= 0) perSession.delete(entry.sessionId)
    else perSession.set(entry.sessionId, left)
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
    reserve (sessionId) {
      const admission = admit(sessionId)
      if (admission !== 'ok') return admission
      reservedBySession.set(sessionId, (reservedBySession.get(sessionId) ?? 0) + 1)
      reservedTotal++
      let held = true
      return () => {
        if (!held) return
        held = false
        unreserve(sessionId)
      }
    },
    open (requestId, sessionId, timeoutMs, callbacks) {
      // Replacing a live entry would orphan its actor, whose deadline would later settle the
      // wrong callbacks. Ids are generated per request, so this is a bug, never traffic.
      if (entries.has(requestId)) throw new Error(`request ${requestId} is already in flight`)
      const actor = createActor(machine, { parent: parent(), input: { requestId } })
      const deadline = clock.setTimeout(() => { actor.send({ type: 'DEADLINE' }) }, timeoutMs)
      entries.set(requestId, { actor, deadline, sessionId, startedAt: clock.now(), callbacks })
      perSession.set(sessionId, (perSession.get(sessionId) ?? 0) + 1)
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
    countForSession: (sessionId) => perSession.get(sessionId) ?? 0,
    bySession: () => Object.fromEntries(perSession),
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
