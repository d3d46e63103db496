/**
 * One chat request waiting for its worker: one actor, one deadline, and every way out is a
 * final state, so the registry frees the request on each of them.
 *
 *   pending --CHUNK--> streaming --CHUNK--> streaming
 *      |                  |
 *      +------------------+--DONE--> done
 *                         +--ERROR--> failed (worker error)
 *                         +--LINK_DOWN--> failed (link lost)
 *                         +--SHUTDOWN--> failed (shutting down)
 *                         +--ABORT--> cancelled (the client went away)
 *                         +--DEADLINE--> timedOut
 *
 * Pure: what happens on a chunk or on settling is injected with `.provide()`, and the
 * deadline arrives as an event. The registry arms exactly one timer per request and sends
 * DEADLINE when it fires, instead of an `after` delay here: an `after` needs each actor to
 * own an XState system and scheduler, measured at +2.4 KB of heap and +20 us per request
 * (docs/benchmarks.md), and ten thousand requests in flight is the normal case.
 */
import { assign, setup } from 'xstate'

export type PendingOutcome = 'done' | 'failed' | 'timedOut' | 'cancelled'
export type FailureCause = 'worker_error' | 'link_down' | 'shutdown'

export interface PendingInput {
  requestId: string
}

export interface PendingContext extends PendingInput {
  cause: FailureCause | null
  /** The worker's final text (done) or error message (failed by the worker). */
  text: string | null
}

export type PendingEvent =
  | { type: 'CHUNK', delta: string }
  | { type: 'DONE', content: string }
  | { type: 'ERROR', error: string }
  | { type: 'LINK_DOWN' }
  | { type: 'SHUTDOWN' }
  | { type: 'ABORT' }
  | { type: 'DEADLINE' }

const noop = (): void => {}

const exits = {
  DONE: { target: 'done', actions: 'recordContent' },
  ERROR: { target: 'failed', actions: 'recordWorkerError' },
  LINK_DOWN: { target: 'failed', actions: 'recordLinkDown' },
  SHUTDOWN: { target: 'failed', actions: 'recordShutdown' },
  ABORT: { target: 'cancelled' }
} as const

export const pendingRequestMachine = setup({
  types: {
    context: {} as PendingContext,
    events: {} as PendingEvent,
    input: {} as PendingInput
  },
  actions: {
    /** Relay a chunk to whoever streams it (WebSocket, SSE); the HTTP path ignores it. */
    relayChunk: noop as (args: { context: PendingContext, event: PendingEvent }) => void,
    /** Free the request and answer the client; runs exactly once, on the final state. */
    settle: noop as (args: { context: PendingContext }, params: { outcome: PendingOutcome }) => void,
    recordContent: assign({ text: ({ event }) => event.type === 'DONE' ? event.content : null }),
    recordWorkerError: assign({
      cause: 'worker_error' as FailureCause,
      text: ({ event }) => event.type === 'ERROR' ? event.error : null
    }),
    recordLinkDown: assign({ cause: 'link_down' as FailureCause }),
    recordShutdown: assign({ cause: 'shutdown' as FailureCause })
  }
}).createMachine({
  id: 'pendingRequest',
  context: ({ input }) => ({ ...input, cause: null, text: null }),
  initial: 'pending',
  // One deadline for the whole request, handled at the root: moving from pending to streaming
  // does not change it, and once a final state is reached it is ignored.
  on: { DEADLINE: '.timedOut' },
  states: {
    pending: {
      on: { CHUNK: { target: 'streaming', actions: 'relayChunk' }, ...exits }
    },
    streaming: {
      on: { CHUNK: { actions: 'relayChunk' }, ...exits }
    },
    done: { type: 'final', entry: { type: 'settle', params: { outcome: 'done' } } },
    failed: { type: 'final', entry: { type: 'settle', params: { outcome: 'failed' } } },
    timedOut: { type: 'final', entry: { type: 'settle', params: { outcome: 'timedOut' } } },
    cancelled: { type: 'final', entry: { type: 'settle', params: { outcome: 'cancelled' } } }
  }
})
