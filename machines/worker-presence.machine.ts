/**
 * One announced LLM worker as the gateway sees it (contract v1.1, "Workers: presence").
 *
 *   online --(1.5 intervals without a heartbeat)--> suspect --(3 intervals in all)--> offline
 *   suspect/offline --HEARTBEAT--> online        any --GONE (last will, "offline")--> offline
 *   offline --(WORKER_FORGET_MS)--> forgotten (final: the registry drops the worker)
 *
 * A heartbeat re-enters `online`, which restarts the silence timer: "offline after 3 heartbeat
 * intervals" is measured from the last heartbeat, with the worker's own announced interval.
 * `suspect` is the grace for one late heartbeat (a GC pause, a busy broker): no new chats go
 * there, but nothing it holds is given up. `draining` is data, not a state: a draining worker
 * is alive (its chats keep going) but takes nothing new.
 *
 * Pure: what going offline means for the chats the worker holds, and what coming back means,
 * is injected (`wentOffline`, `cameOnline`, src/fleet/worker-fleet.ts); timers are XState
 * delays run on the clock the actor is given, so tests drive them with a fake one. Workers are
 * few (bounded by WORKER_REGISTRY_MAX), so an actor and a system each is affordable here,
 * unlike for the ten thousand pending requests.
 */
import { assign, setup } from 'xstate'

export interface WorkerInput {
  workerId: string
  /** How long an offline worker is remembered before it is forgotten. */
  forgetAfterMs: number
  beat: Heartbeat
}

export interface Heartbeat {
  capacity: number
  inFlight: number
  heartbeatMs: number
  draining: boolean
  at: number
}

export interface WorkerContext {
  workerId: string
  forgetAfterMs: number
  capacity: number
  /** What the worker last said it holds (from every gateway, not only this one). */
  reportedInFlight: number
  heartbeatMs: number
  draining: boolean
  lastSeenAt: number
  /** When it came online this time (epoch ms). */
  since: number
}

export type WorkerEvent =
  | { type: 'HEARTBEAT', beat: Heartbeat }
  /** The worker said it is offline: its last will (it died) or its own goodbye. */
  | { type: 'GONE', at: number }

/** 1.5 intervals: one heartbeat is late by half an interval. */
export const SUSPECT_AFTER_INTERVALS = 1.5
/** 3 intervals from the last heartbeat (the contract's bound). */
export const OFFLINE_AFTER_INTERVALS = 3

const noop = (): void => {}

export const workerPresenceMachine = setup({
  types: {
    context: {} as WorkerContext,
    events: {} as WorkerEvent,
    input: {} as WorkerInput
  },
  actions: {
    /** The worker stopped being reachable: fail over what it holds. */
    wentOffline: noop as (args: { context: WorkerContext }) => void,
    /** The worker is back (or new): it can take chats again. */
    cameOnline: noop as (args: { context: WorkerContext }) => void,
    /** A heartbeat is late: no new chats go there for now. */
    wentSuspect: noop as (args: { context: WorkerContext }) => void,
    /** The registry drops the worker. */
    forget: noop as (args: { context: WorkerContext }) => void,
    record: assign(({ event }) => event.type === 'HEARTBEAT'
      ? { capacity: event.beat.capacity, reportedInFlight: event.beat.inFlight, heartbeatMs: event.beat.heartbeatMs, draining: event.beat.draining, lastSeenAt: event.beat.at }
      : {}),
    markSince: assign(({ event }) => event.type === 'HEARTBEAT' ? { since: event.beat.at } : {})
  },
  delays: {
    suspectAfter: ({ context }) => context.heartbeatMs * SUSPECT_AFTER_INTERVALS,
    offlineAfter: ({ context }) => context.heartbeatMs * (OFFLINE_AFTER_INTERVALS - SUSPECT_AFTER_INTERVALS),
    forgetAfter: ({ context }) => context.forgetAfterMs
  }
}).createMachine({
  id: 'workerPresence',
  context: ({ input }) => ({
    workerId: input.workerId,
    forgetAfterMs: input.forgetAfterMs,
    capacity: input.beat.capacity,
    reportedInFlight: input.beat.inFlight,
    heartbeatMs: input.beat.heartbeatMs,
    draining: input.beat.draining,
    lastSeenAt: input.beat.at,
    since: input.beat.at
  }),
  initial: 'online',
  on: {
    GONE: { target: '.offline' }
  },
  states: {
    online: {
      entry: 'cameOnline',
      initial: 'beating',
      states: {
        // Each heartbeat re-enters `beating` alone, restarting the silence timer without
        // announcing the worker again.
        beating: {
          after: { suspectAfter: '#workerPresence.suspect' },
          on: { HEARTBEAT: { target: 'beating', reenter: true, actions: 'record' } }
        }
      }
    },
    suspect: {
      entry: 'wentSuspect',
      after: { offlineAfter: 'offline' },
      // Back in time: not a new arrival, so `since` stays.
      on: { HEARTBEAT: { target: 'online', actions: 'record' } }
    },
    offline: {
      entry: 'wentOffline',
      after: { forgetAfter: 'forgotten' },
      on: { HEARTBEAT: { target: 'online', actions: ['record', 'markSince'] }, GONE: {} }
    },
    forgotten: { type: 'final', entry: 'forget' }
  }
})

export type WorkerStateName = 'online' | 'suspect' | 'offline' | 'forgotten'
