/**
 * The MQTT link's lifecycle, as the single owner of it. mqtt.js runs with
 * `reconnectPeriod: 0`; every connect, drop, probe and retry is decided here.
 *
 *   connecting --CONNECTED--> connected --(silent too long)--> stale --PROBE_ACK--> connected
 *        |                       |                               |
 *        +---- lost/timeout -----+----------- lost --------------+-- probe timeout
 *        v
 *   reconnecting --(backoff, full jitter)--> connecting
 *        | attempts exhausted
 *        v
 *   givingUp (retries at the cap interval; CONNECTED --> connected)
 *
 * CLOSE from anywhere --> closed (final).
 *
 * The machine is pure: I/O (open, drop, close, subscribe, probe), notifications, the
 * staleness test and the time to the next staleness check are slots that src/mqtt fills
 * with `.provide()`. Time comes from the actor's clock, so tests run hours of backoff in
 * milliseconds with XState's SimulatedClock.
 */
import { assign, setup } from 'xstate'

export type LinkStateName = 'connecting' | 'connected' | 'stale' | 'reconnecting' | 'givingUp' | 'closed'

export interface LinkInput {
  maxReconnectAttempts: number
  backoffBaseMs: number
  backoffCapMs: number
  connectTimeoutMs: number
  probeTimeoutMs: number
  /** Uniform [0, 1): injected so tests can pin the jitter. */
  random: () => number
}

export interface LinkContext extends LinkInput {
  /** Reconnect attempts started since the last successful connect. */
  attempts: number
  /** The wait chosen for the current reconnecting/givingUp period, in ms. */
  retryDelayMs: number
  lastError: string | null
}

export type LinkEvent =
  | { type: 'CONNECTED' }
  | { type: 'CONNECTION_LOST', reason: string }
  | { type: 'PROBE_ACK' }
  /** Something changed that may bring the next staleness check forward (a request went out on an idle link). */
  | { type: 'WAKE' }
  | { type: 'CLOSE' }

/**
 * "Full jitter" (AWS architecture blog, Exponential Backoff and Jitter): a uniform wait in
 * [0, min(cap, base * 2^attempt)). It spreads a fleet's reconnects after a broker restart
 * instead of having them arrive in waves, which is what a fixed interval does.
 */
export function fullJitterDelayMs (attempt: number, baseMs: number, capMs: number, random: () => number): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * ceiling)
}

const noop = (): void => {}

// Losing the link from any live state: give up if the retry budget is spent, else retry.
const LINK_LOST = [
  { guard: 'attemptsExhausted', target: '#mqttLink.givingUp', actions: 'recordError' },
  { target: '#mqttLink.reconnecting', actions: 'recordError' }
] as const

export const mqttLinkMachine = setup({
  types: {
    context: {} as LinkContext,
    events: {} as LinkEvent,
    input: {} as LinkInput
  },
  actions: {
    /** Create a client and start connecting; its events come back as CONNECTED / CONNECTION_LOST. */
    openConnection: noop,
    /** Destroy the current client at once; nothing it emits afterwards may reach the machine. */
    dropConnection: noop,
    /** Send DISCONNECT and end the client cleanly (shutdown). */
    closeConnection: noop,
    /** Subscribe to every topic in the subscription registry (sessions are clean). */
    restoreSubscriptions: noop,
    /** Publish to the gateway's own probe topic; the echo arrives as PROBE_ACK. */
    sendProbe: noop,
    /** The link can carry traffic again. */
    notifyUp: noop,
    /** The link cannot carry traffic: in-flight requests must be failed now. */
    notifyDown: noop,
    /** A wait of `retryDelayMs` before the next attempt has begun (for Retry-After). */
    noteRetryScheduled: noop,
    resetAttempts: assign({ attempts: 0, lastError: null }),
    countAttempt: assign({ attempts: ({ context }) => context.attempts + 1 }),
    chooseBackoff: assign({
      retryDelayMs: ({ context }) =>
        fullJitterDelayMs(context.attempts, context.backoffBaseMs, context.backoffCapMs, context.random)
    }),
    chooseCapDelay: assign({ retryDelayMs: ({ context }) => context.backoffCapMs }),
    recordError: assign({
      lastError: ({ event }) => event.type === 'CONNECTION_LOST' ? event.reason : null
    }),
    recordConnectTimeout: assign({ lastError: 'connect timeout' }),
    recordProbeTimeout: assign({ lastError: 'probe timeout' })
  },
  guards: {
    /** Requests in flight and silence past MQTT_STALE_AFTER_MS, or idle for a keepalive period. */
    linkLooksStale: () => false,
    attemptsExhausted: ({ context }) => context.attempts >= context.maxReconnectAttempts
  },
  delays: {
    connectTimeout: ({ context }) => context.connectTimeoutMs,
    probeTimeout: ({ context }) => context.probeTimeoutMs,
    retryDelay: ({ context }) => context.retryDelayMs,
    /** Time until the link could first look stale, given what has been seen so far. */
    nextStaleCheck: () => 1000
  }
}).createMachine({
  id: 'mqttLink',
  context: ({ input }) => ({ ...input, attempts: 0, retryDelayMs: 0, lastError: null }),
  initial: 'connecting',
  on: {
    CLOSE: { target: '.closed' }
  },
  states: {
    connecting: {
      entry: 'openConnection',
      on: {
        CONNECTED: { target: 'connected', actions: ['resetAttempts', 'restoreSubscriptions', 'notifyUp'] },
        CONNECTION_LOST: LINK_LOST
      },
      after: {
        connectTimeout: [
          { guard: 'attemptsExhausted', target: 'givingUp', actions: 'recordConnectTimeout' },
          { target: 'reconnecting', actions: 'recordConnectTimeout' }
        ]
      }
    },
    connected: {
      on: {
        CONNECTION_LOST: LINK_LOST,
        WAKE: { target: '.watching', reenter: true }
      },
      initial: 'watching',
      states: {
        watching: {
          after: {
            nextStaleCheck: [
              { guard: 'linkLooksStale', target: '#mqttLink.stale' },
              { target: 'watching', reenter: true }
            ]
          }
        }
      }
    },
    stale: {
      entry: 'sendProbe',
      on: {
        PROBE_ACK: { target: 'connected' },
        CONNECTION_LOST: LINK_LOST
      },
      after: {
        probeTimeout: [
          { guard: 'attemptsExhausted', target: 'givingUp', actions: 'recordProbeTimeout' },
          { target: 'reconnecting', actions: 'recordProbeTimeout' }
        ]
      }
    },
    reconnecting: {
      // The retry is scheduled before anyone is told of the loss: what the chats in flight are
      // answered with (Retry-After) is read while they are told.
      entry: ['dropConnection', 'chooseBackoff', 'noteRetryScheduled', 'notifyDown'],
      after: {
        retryDelay: { target: 'connecting', actions: 'countAttempt' }
      }
    },
    givingUp: {
      entry: ['dropConnection', 'chooseCapDelay', 'noteRetryScheduled', 'notifyDown'],
      on: {
        CONNECTED: { target: 'connected', actions: ['resetAttempts', 'restoreSubscriptions', 'notifyUp'] }
      },
      initial: 'waiting',
      states: {
        // Each wait is announced once: on entering givingUp (above, before notifyDown), then by
        // the transitions back here from a failed attempt.
        waiting: {
          after: { retryDelay: { target: 'attempting', actions: 'countAttempt' } }
        },
        attempting: {
          entry: 'openConnection',
          on: {
            CONNECTION_LOST: { target: 'waiting', actions: ['dropConnection', 'recordError', 'noteRetryScheduled'] }
          },
          after: {
            connectTimeout: { target: 'waiting', actions: ['dropConnection', 'recordConnectTimeout', 'noteRetryScheduled'] }
          }
        }
      }
    },
    closed: {
      type: 'final',
      entry: 'closeConnection'
    }
  }
})

/**
 * The one rule for whether the link can carry a chat in a state (admission, /readyz, health,
 * the status page and metrics all ask this). `stale` can: a probe is a suspicion, not an
 * outage, and an idle link is probed every keepalive period. A chat sent meanwhile waits in the
 * socket like any other; if the probe fails the link drops and the chat is answered 503 then.
 */
export function carriesChats (state: LinkStateName): boolean {
  return state === 'connected' || state === 'stale'
}

/** The top-level state name, which is what health, metrics and logs report. */
export function linkStateName (value: unknown): LinkStateName {
  if (typeof value === 'string') return value as LinkStateName
  return Object.keys(value as object)[0] as LinkStateName
}
