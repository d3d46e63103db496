/**
 * One chat request waiting for its LLM worker: one actor, one deadline, and every way out is a
 * final state, so the registry frees the request on each of them.
 *
 *   active (parallel)
 *     reply:  pending --CHUNK--> streaming --CHUNK--> streaming   (each CHUNK re-arms the stall timer)
 *     client: attached --DETACH--> detached --ATTACH--> attached  (detached arms the resume grace)
 *   from anywhere in active:
 *     DONE --> done · ERROR --> failed (worker) · LINK_DOWN --> failed (link) · SHUTDOWN --> failed
 *     WORKER_LOST --> failed (its worker went offline) · NO_WORKERS --> failed (no worker could take it)
 *     CANCEL --> cancelled (the client pressed Stop) · ABORT --> cancelled (the client is gone)
 *     STALL --> stalled (no first chunk, or silence after one, past its bound)
 *     GRACE_OVER (detached only) --> cancelled (the client did not come back)
 *     DEADLINE --> timedOut
 *     HANDED_OVER --> handedOver (another gateway took the stream over: nothing is answered,
 *                    stored or cancelled here)
 *
 * Pure: what happens on a chunk, on settling and on (dis)arming the stall and grace timers is
 * injected with `.provide()`, and timers arrive as events. The registry keeps one deadline timer
 * per request and sends DEADLINE, STALL and GRACE_OVER itself, instead of `after` delays here:
 * an `after` needs each actor to own an XState system and scheduler, measured at +2.4 KB of heap
 * and +20 us per request (docs/benchmarks.md), and ten thousand requests in flight is the normal
 * case. The machine still decides when each timer runs: the stall timer on entering `pending`
 * and on every chunk, the grace timer while `detached`.
 *
 * There is no "cancelling" state: the gateway never waits for a worker to confirm a cancel (v1
 * workers never do). A request that ends before its worker's answer is final at once, and the
 * registry's settle publishes the cancel to the worker (src/chat/dispatcher.ts).
 */
import { assign, setup } from 'xstate'

export type PendingOutcome = 'done' | 'failed' | 'timedOut' | 'cancelled' | 'stalled' | 'handedOver'
export type FailureCause = 'worker_error' | 'link_down' | 'shutdown' | 'worker_lost' | 'no_workers'
/** Why a chat was cancelled: the contract's cancel reasons that come from the client. */
export type CancelReason = 'client_cancelled' | 'client_gone'
/** Which stall bound is armed: the first chunk's (CHAT_FIRST_CHUNK_TIMEOUT_MS) or the idle one (CHAT_IDLE_TIMEOUT_MS). */
export type StallPhase = 'first' | 'idle'

export interface PendingInput {
  requestId: string
}

export interface PendingContext extends PendingInput {
  cause: FailureCause | null
  cancelReason: CancelReason | null
  /** The worker's final text (done) or error message (failed by the worker). */
  text: string | null
}

export type PendingEvent =
  | { type: 'CHUNK', delta: string }
  | { type: 'DONE', content: string }
  | { type: 'ERROR', error: string }
  | { type: 'LINK_DOWN' }
  | { type: 'SHUTDOWN' }
  /** The announced worker holding it went offline, and it could not move (src/chat/worker-routing.ts). */
  | { type: 'WORKER_LOST' }
  /** Every worker it was offered to answered `busy`, or none was left to offer it to. */
  | { type: 'NO_WORKERS' }
  | { type: 'CANCEL' }
  | { type: 'ABORT' }
  | { type: 'DETACH' }
  | { type: 'ATTACH' }
  | { type: 'GRACE_OVER' }
  | { type: 'STALL' }
  | { type: 'DEADLINE' }
  /** Another gateway resumed the stream and the worker now answers there (src/cluster/stream-resume.ts). */
  | { type: 'HANDED_OVER' }

const noop = (): void => {}

export const pendingRequestMachine = setup({
  types: {
    context: {} as PendingContext,
    events: {} as PendingEvent,
    input: {} as PendingInput
  },
  actions: {
    /** Relay a chunk to whoever streams it (WebSocket, SSE, the replay buffer). */
    relayChunk: noop as (args: { context: PendingContext, event: PendingEvent }) => void,
    /** (Re)arm the stall timer for this phase; the registry sends STALL when it runs out. */
    armStallTimer: noop as (args: { context: PendingContext }, params: { phase: StallPhase }) => void,
    /** Arm the resume grace (STREAM_RESUME_GRACE_MS); the registry sends GRACE_OVER when it runs out. */
    armGraceTimer: noop as (args: { context: PendingContext }) => void,
    disarmGraceTimer: noop as (args: { context: PendingContext }) => void,
    /** Free the request and answer the client; runs exactly once, on the final state. */
    settle: noop as (args: { context: PendingContext }, params: { outcome: PendingOutcome }) => void,
    recordContent: assign({ text: ({ event }) => event.type === 'DONE' ? event.content : null }),
    recordWorkerError: assign({
      cause: 'worker_error' as FailureCause,
      text: ({ event }) => event.type === 'ERROR' ? event.error : null
    }),
    recordLinkDown: assign({ cause: 'link_down' as FailureCause }),
    recordShutdown: assign({ cause: 'shutdown' as FailureCause }),
    recordWorkerLost: assign({ cause: 'worker_lost' as FailureCause }),
    recordNoWorkers: assign({ cause: 'no_workers' as FailureCause }),
    recordCancelled: assign({ cancelReason: 'client_cancelled' as CancelReason }),
    recordGone: assign({ cancelReason: 'client_gone' as CancelReason })
  }
}).createMachine({
  id: 'pendingRequest',
  context: ({ input }) => ({ ...input, cause: null, cancelReason: null, text: null }),
  initial: 'active',
  // One deadline for the whole request, handled at the root: once a final state is reached
  // it is ignored.
  on: { DEADLINE: '.timedOut' },
  states: {
    active: {
      type: 'parallel',
      on: {
        DONE: { target: 'done', actions: 'recordContent' },
        ERROR: { target: 'failed', actions: 'recordWorkerError' },
        LINK_DOWN: { target: 'failed', actions: 'recordLinkDown' },
        SHUTDOWN: { target: 'failed', actions: 'recordShutdown' },
        WORKER_LOST: { target: 'failed', actions: 'recordWorkerLost' },
        NO_WORKERS: { target: 'failed', actions: 'recordNoWorkers' },
        CANCEL: { target: 'cancelled', actions: 'recordCancelled' },
        ABORT: { target: 'cancelled', actions: 'recordGone' },
        STALL: 'stalled',
        HANDED_OVER: 'handedOver'
      },
      states: {
        reply: {
          initial: 'pending',
          states: {
            pending: {
              entry: { type: 'armStallTimer', params: { phase: 'first' } },
              on: { CHUNK: { target: 'streaming', actions: 'relayChunk' } }
            },
            streaming: {
              entry: { type: 'armStallTimer', params: { phase: 'idle' } },
              on: { CHUNK: { target: 'streaming', reenter: true, actions: 'relayChunk' } }
            }
          }
        },
        client: {
          initial: 'attached',
          states: {
            attached: {
              on: { DETACH: 'detached' }
            },
            detached: {
              entry: 'armGraceTimer',
              exit: 'disarmGraceTimer',
              on: {
                ATTACH: 'attached',
                GRACE_OVER: { target: '#pendingRequest.cancelled', actions: 'recordGone' }
              }
            }
          }
        }
      }
    },
    done: { type: 'final', entry: { type: 'settle', params: { outcome: 'done' } } },
    failed: { type: 'final', entry: { type: 'settle', params: { outcome: 'failed' } } },
    timedOut: { type: 'final', entry: { type: 'settle', params: { outcome: 'timedOut' } } },
    cancelled: { type: 'final', entry: { type: 'settle', params: { outcome: 'cancelled' } } },
    stalled: { type: 'final', entry: { type: 'settle', params: { outcome: 'stalled' } } },
    handedOver: { type: 'final', entry: { type: 'settle', params: { outcome: 'handedOver' } } }
  }
})
