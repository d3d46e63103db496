/**
 * The IPC contract between bench/ws.js (orchestrator and hint publisher) and its socket-client
 * processes, bench/ws-client.js. The children are forked with `serialization: 'advanced'`
 * (structured clone), so latency samples travel as Float64Arrays, not JSON number lists.
 *
 * Hint payloads on MQTT are `{"p":<phase>,"seq":<n>,"t":<epoch ms>}`: hint `seq` of a phase
 * goes to session `seq % sessionsTotal`, so a client knows exactly which deliveries to expect.
 */
import { performance } from 'node:perf_hooks'

/** One session a client process holds sockets for: its index in the run's list, and its id. */
export interface SessionRef {
  readonly index: number
  readonly id: string
}

export type ClientCommand =
  | { cmd: 'open', port: number, token: string, sessions: SessionRef[], sessionsTotal: number, perSession: number, concurrency: number, timeoutMs: number }
  | { cmd: 'phase', phase: number, maxSeq: number }
  | { cmd: 'collect', phase: number, published: number, drainMs: number }
  | { cmd: 'chat', opts: ChatOptions }
  | { cmd: 'close', timeoutMs: number }

export interface ChatOptions {
  readonly port: number
  readonly token: string
  readonly sessionIds: string[]
  readonly sockets: number
  readonly ratePerS: number
  readonly durationS: number
  /** Chunks the echo worker sends before `done`: every chat must see exactly this many. */
  readonly chunks: number
  readonly drainMs: number
  readonly openConcurrency: number
  readonly openTimeoutMs: number
}

export interface HelloMsg {
  readonly type: 'hello'
  readonly pid: number
  /**
   * epochMinusMonoMs() of this process before it adopted the shared base: the spread over the
   * processes is how wrong cross-process latencies would be with each process's own timeOrigin.
   */
  readonly epoch_minus_mono_ms: number
}

export interface OpenedMsg {
  readonly type: 'opened'
  readonly attempted: number
  readonly opened: number
  /** Failed handshakes by cause: `http_<status>` for a refusal before the 101, else the error code. */
  readonly failed: Record<string, number>
  readonly elapsed_ms: number
  /** Connect start to `open`, per socket that opened. */
  readonly open_ms: Float64Array
}

export interface PhaseReadyMsg { readonly type: 'phase-ready', readonly phase: number }

export interface PhaseResultMsg {
  readonly type: 'phase-result'
  readonly phase: number
  /** Sum over published hints of this process's sessions of the sockets open at phase start. */
  readonly expected: number
  /** Deliveries counted once per (socket's session, seq) up to `expected` for that seq. */
  readonly delivered: number
  readonly missing: number
  /** Deliveries beyond the expected count for a seq (a hint seen twice on a socket). */
  readonly duplicates: number
  /** Hints of another phase (late from the previous one) or with no parsable payload. */
  readonly stray: number
  /** Hints whose seq belongs to another session than the socket's. */
  readonly misrouted: number
  /** Publish to receive, ms, one per delivery. */
  readonly latencies: Float64Array
  /**
   * By second of publish time since the phase started: deliveries, the largest latency, and
   * deliveries slower than SLOW_MS (bench/ws/hints.ts); and pings received by second of receipt.
   * Shows whether a tail is one stall or steady, and whether it lines up with the server's pings.
   */
  /** epochMs() when this client started the phase: second 0 of per_second. */
  readonly started_epoch_ms: number
  readonly per_second: { count: Uint32Array, max_ms: Float64Array, slow: Uint32Array, pings: Uint32Array }
  /** Means over deliveries, from the gateway's `ts` (whole ms, so each is about ±0.5 ms). */
  readonly publish_to_gateway_mean_ms: number
  readonly gateway_to_client_mean_ms: number
  /** Event-loop utilisation of this client over the phase (1 = saturated: then it is the bottleneck). */
  readonly elu: number
  /** This client's longest event-loop delay (monitorEventLoopDelay, its 10 ms resolution taken off) and GC pauses, ms. */
  readonly loop_delay_max_ms: number
  readonly gc_max_ms: number
  readonly gc_total_ms: number
  /** Sockets closed during the phase, by close code. */
  readonly closes: Record<string, number>
  readonly open_sockets: number
}

export interface ChatResultMsg {
  readonly type: 'chat-result'
  readonly sockets_opened: number
  readonly open_failed: Record<string, number>
  readonly sent: number
  /** `done` with content `echo: <what was sent>` and exactly `chunks` chunks before it. */
  readonly completed: number
  readonly errors: Record<string, number>
  /** `done` with the wrong content or chunk count. */
  readonly bad: number
  readonly unfinished: number
  readonly send_window_s: number
  /** Send to first `chunk`, ms. */
  readonly first_chunk_ms: Float64Array
  /** Send to `done`, ms. */
  readonly done_ms: Float64Array
  readonly elu: number
  readonly closes: Record<string, number>
}

export interface ClosedMsg {
  readonly type: 'closed'
  readonly closed: number
  readonly still_open: number
}

export interface ErrorMsg { readonly type: 'error', readonly message: string }

export type ClientMessage = HelloMsg | OpenedMsg | PhaseReadyMsg | PhaseResultMsg | ChatResultMsg | ClosedMsg | ErrorMsg

/** The machine's monotonic clock (CLOCK_MONOTONIC: one clock for every process), ms with µs precision. */
export function monoMs (): number { return Number(process.hrtime.bigint() / 1000n) / 1000 }

/**
 * `performance.timeOrigin + performance.now()` minus the monotonic clock, in ms: this process's
 * idea of the epoch. Node takes `timeOrigin` from the wall clock at start-up, and in trial runs
 * two processes started a second apart disagreed by up to 1.6 ms — as much as the latencies
 * measured. So the processes that time hints all use one base, the orchestrator's (see epochMs).
 */
export function epochMinusMonoMs (): number {
  const mono = monoMs()
  return performance.timeOrigin + performance.now() - mono
}

let epochBase = epochMinusMonoMs()

/** Makes epochMs() of this process use `base` (the orchestrator's epochMinusMonoMs()). */
export function setEpochBase (base: number): void { epochBase = base }

/**
 * Epoch ms with sub-ms precision, `Date.now()`-compatible (within a ms or two of the wall
 * clock), and exactly comparable across the bench's processes: one monotonic clock plus one
 * shared base.
 */
export function epochMs (): number { return monoMs() + epochBase }
