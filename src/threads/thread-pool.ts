/**
 * CPU-bound work (password hashing, history token counting, content filters) on worker
 * threads, so the event loop that serves HTTP, WebSockets and MQTT never stalls behind it.
 *
 * A thin layer over piscina that adds what the gateway needs from it:
 * - a bounded backlog: past `threads` running plus `maxQueue` waiting, a task is refused at
 *   once with `overloaded` (503 + Retry-After) rather than queued behind work that will
 *   already be late;
 * - a deadline on every task, timed by the injected clock: at the deadline the task's signal
 *   aborts, piscina terminates the thread running it (or drops it from the queue) and starts
 *   a replacement, and the caller gets `task_timeout`;
 * - an explicit lifecycle: no thread exists before start() or after stop().
 *
 * `inline` (THREAD_INLINE, a benchmarking switch refused in production) runs the same task
 * modules on the calling thread instead, to show what the threads prevent.
 */
import { pathToFileURL } from 'node:url'
import { Piscina } from 'piscina'
import { systemClock, type Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { taskFile } from './task-file.js'

export type ThreadPoolErrorCode = 'overloaded' | 'task_timeout' | 'pool_stopped'

export class ThreadPoolError extends Error {
  readonly code: ThreadPoolErrorCode
  /** Set for `overloaded`: whole seconds after which a retry is likely to be admitted. */
  readonly retryAfterS: number | undefined

  constructor (code: ThreadPoolErrorCode, message: string, retryAfterS?: number) {
    super(message)
    this.name = 'ThreadPoolError'
    this.code = code
    this.retryAfterS = retryAfterS
  }
}

/** The tasks src/ runs; tests may register more through `tasks`. */
export type KnownTask = 'hash-password' | 'verify-password' | 'trim-history' | 'screen-content'

export interface ThreadPoolOptions {
  /** Worker threads kept running between start() and stop() (THREADS). */
  threads: number
  /** Tasks allowed to wait for a thread; one more is refused as overloaded (THREAD_MAX_QUEUE). */
  maxQueue: number
  /**
   * How much lower than the event loop's the worker threads' CPU priority is (THREAD_NICE,
   * nice(2) units, Linux keeps one per thread; 0 = the same). When the threads and the loop
   * want the same cores, the loop wins, so a login storm's scrypt waits, not health checks.
   */
  niceIncrement?: number
  /** Deadline of a task that names none, queueing included (THREAD_TASK_TIMEOUT_MS). */
  defaultTimeoutMs: number
  log: Pick<Logger, 'warn' | 'error'>
  clock?: Clock
  /** Extra task names and the absolute path (or file URL) of their worker file. */
  tasks?: Readonly<Record<string, string>>
  /**
   * Run every task on the calling thread (THREAD_INLINE): no threads, no backlog, no
   * deadlines. For benchmarks only, to measure what the pool keeps off the event loop.
   */
  inline?: boolean
}

export interface RunOptions {
  /** Deadline in ms from now, queueing included; defaults to defaultTimeoutMs. */
  timeoutMs?: number
  /** Abandons the task early; the promise then rejects with `signal.reason`. */
  signal?: AbortSignal
}

export interface ThreadPoolStats {
  /** Live worker threads (0 when stopped; briefly fewer while one is being replaced). */
  threads: number
  queued: number
  running: number
  /** Tasks that returned a result. */
  completed: number
  /** Tasks whose worker threw. */
  failed: number
  timedOut: number
  /** Tasks refused because the backlog was full. */
  overloaded: number
}

export interface ThreadPool {
  start (): void
  /** Terminates every thread; tasks still queued or running reject with `pool_stopped`. */
  stop (): Promise<void>
  run<T = unknown> (task: KnownTask | (string & {}), input: unknown, options?: RunOptions): Promise<T>
  stats (): ThreadPoolStats
}

/**
 * Weight of the newest task in the moving average of task latency (submit to settle) that
 * Retry-After is based on: when the backlog is full, a task admitted now waits about as long
 * as the recent ones did, which themselves went through a nearly full backlog.
 */
const LATENCY_EWMA_WEIGHT = 0.2
/** Bounds of the Retry-After given with `overloaded`, in seconds. */
const MIN_RETRY_AFTER_S = 1
const MAX_RETRY_AFTER_S = 30

/**
 * Worker threads load their task module on first use. On Node 20.19+ piscina's require()
 * of an ES module goes through require(esm), and terminating a thread at its deadline while
 * that load is under way hits a fatal assertion in Node that aborts the whole process
 * (seen under a login storm with bench:loop). Without require(esm) piscina falls back to
 * import(), which a termination interrupts cleanly: start() adds --no-experimental-require-module.
 *
 * Flags that change how modules load (a TypeScript loader under tap, say): a worker needs them too.
 */
const MODULE_FLAGS = /^(--import|--require|-r|--loader|--experimental-loader|--conditions|-C)(=|$)/
const KEPT_FLAGS = new Set(['--enable-source-maps', '--no-warnings', '--no-deprecation', '--preserve-symlinks'])

/**
 * The worker threads' node flags: the process's module-loading flags (plus the one above when
 * `noRequireModule`). Passing
 * execArgv makes Node check every flag, and V8 or process-wide ones (--expose-gc,
 * --max-old-space-size, --title...) are refused with ERR_WORKER_INVALID_EXEC_ARGV, so the
 * process's own flags cannot be passed on wholesale: the gateway run with --expose-gc
 * (bench:chat's heap phase) could not start its pool.
 */
export function threadExecArgv (execArgv: readonly string[], noRequireModule: boolean): string[] {
  const kept: string[] = []
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i] as string
    if (KEPT_FLAGS.has(arg)) kept.push(arg)
    else if (MODULE_FLAGS.test(arg)) {
      kept.push(arg)
      // "--import x": the value is the next entry.
      if (!arg.includes('=') && i + 1 < execArgv.length) kept.push(execArgv[++i] as string)
    }
  }
  if (noRequireModule) kept.push('--no-experimental-require-module')
  return kept
}

export function createThreadPool (options: ThreadPoolOptions): ThreadPool {
  const { threads, maxQueue, defaultTimeoutMs, log } = options
  const clock = options.clock ?? systemClock
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be an integer >= 1, got ${threads}`)
  if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new RangeError(`maxQueue must be an integer >= 0, got ${maxQueue}`)
  if (!(defaultTimeoutMs > 0)) throw new RangeError(`defaultTimeoutMs must be > 0, got ${defaultTimeoutMs}`)

  const files = new Map<string, string>([
    ['hash-password', taskFile('hash-password')],
    ['verify-password', taskFile('verify-password')],
    ['trim-history', taskFile('trim-history')],
    ['screen-content', taskFile('screen-content')],
    ...Object.entries(options.tasks ?? {})
  ])

  let pool: Piscina | null = null
  /** Inline mode's stand-in for `pool !== null`. */
  let inlineStarted = false
  let inFlight = 0
  let latencyMs = 0
  const counts = { completed: 0, failed: 0, timedOut: 0, overloaded: 0 }

  function retryAfterS (): number {
    return Math.min(MAX_RETRY_AFTER_S, Math.max(MIN_RETRY_AFTER_S, Math.ceil(latencyMs / 1000)))
  }

  function overloaded (): ThreadPoolError {
    counts.overloaded++
    return new ThreadPoolError('overloaded', `thread pool backlog is full (${threads} running, ${maxQueue} queued)`, retryAfterS())
  }

  /** Task modules loaded on the main thread (inline mode), by file. */
  const inlineModules = new Map<string, Promise<{ default: (input: unknown) => unknown }>>()

  /**
   * The task's default export called on this thread. Nothing here can enforce a deadline:
   * a task that runs for seconds blocks the event loop for seconds, and there is no thread to
   * terminate, so `timeoutMs` and a signal that aborts mid-task are ignored. That stall is
   * exactly what this mode exists to show.
   */
  async function runInline<T> (task: string, filename: string, input: unknown, signal: AbortSignal | undefined): Promise<T> {
    if (!inlineStarted) throw new ThreadPoolError('pool_stopped', 'thread pool is not running')
    if (signal?.aborted === true) throw signal.reason
    let loading = inlineModules.get(filename)
    if (loading === undefined) {
      const url = filename.startsWith('file:') ? filename : pathToFileURL(filename).href
      // A module that fails to load is not remembered, so the next task tries again.
      loading = (import(url) as Promise<{ default: (input: unknown) => unknown }>)
        .catch((err: unknown) => { inlineModules.delete(filename); throw err })
      inlineModules.set(filename, loading)
    }
    inFlight++
    try {
      const mod = await loading
      if (typeof mod.default !== 'function') throw new TypeError(`thread task "${task}" (${filename}) has no default export`)
      const result = await mod.default(input) as T
      counts.completed++
      return result
    } catch (err) {
      counts.failed++
      throw err
    } finally {
      inFlight--
    }
  }

  async function run<T> (task: string, input: unknown, runOptions: RunOptions = {}): Promise<T> {
    const filename = files.get(task)
    if (filename === undefined) throw new TypeError(`unknown thread task "${task}"`)
    if (options.inline === true) return await runInline<T>(task, filename, input, runOptions.signal)
    const instance = pool
    if (instance === null) throw new ThreadPoolError('pool_stopped', 'thread pool is not running')
    const { signal } = runOptions
    if (signal?.aborted === true) throw signal.reason
    // Our own count rather than piscina's maxQueue alone: piscina also counts threads that
    // are still starting as room, so its limit moves while a timed-out thread is replaced.
    if (inFlight >= threads + maxQueue) throw overloaded()

    const timeoutMs = runOptions.timeoutMs ?? defaultTimeoutMs
    const controller = new AbortController()
    let timedOut = false
    let callerAborted = false
    const timer = clock.setTimeout(() => {
      timedOut = true
      controller.abort(new ThreadPoolError('task_timeout', `thread task "${task}" exceeded ${timeoutMs} ms`))
    }, timeoutMs)
    const onCallerAbort = (): void => {
      callerAborted = true
      controller.abort(signal?.reason)
    }
    signal?.addEventListener('abort', onCallerAbort, { once: true })

    const submittedAt = clock.now()
    inFlight++
    try {
      const result = await instance.run(input, { filename, signal: controller.signal }) as T
      counts.completed++
      return result
    } catch (err) {
      if (timedOut) {
        counts.timedOut++
        log.warn({ task, timeoutMs }, 'thread task exceeded its deadline; its thread is replaced')
        throw new ThreadPoolError('task_timeout', `thread task "${task}" exceeded ${timeoutMs} ms`)
      }
      if (callerAborted) throw signal?.reason
      if (pool !== instance) throw new ThreadPoolError('pool_stopped', 'thread pool stopped before the task finished')
      if (isQueueLimit(err)) throw overloaded()
      counts.failed++
      throw err
    } finally {
      inFlight--
      clock.clearTimeout(timer)
      signal?.removeEventListener('abort', onCallerAbort)
      const latency = clock.now() - submittedAt
      latencyMs += (latency - latencyMs) * LATENCY_EWMA_WEIGHT
    }
  }

  return {
    start () {
      if (options.inline === true) {
        if (!inlineStarted) log.warn('THREAD_INLINE: thread tasks run on the event loop, without deadlines (benchmarking only)')
        inlineStarted = true
        return
      }
      if (pool !== null) return
      pool = new Piscina({
        minThreads: threads,
        maxThreads: threads,
        execArgv: threadExecArgv(process.execArgv, process.allowedNodeEnvironmentFlags.has('--no-experimental-require-module')),
        // Applied by each thread to itself when it starts, through @napi-rs/nice.
        niceIncrement: options.niceIncrement ?? 0,
        // Backstop only; run() refuses first (see above).
        maxQueue,
        // Workers are started and torn down by start()/stop(), not by idleness.
        idleTimeout: Number.POSITIVE_INFINITY
      })
      // piscina emits 'error' for a worker failure that no task owns (e.g. a thread that
      // dies while idle); an EventEmitter 'error' without a listener would crash the process.
      pool.on('error', (err: unknown) => { log.error({ err }, 'pool thread failed outside a task') })
    },

    async stop () {
      // Inline tasks already running cannot be stopped; they finish on their own.
      inlineStarted = false
      const instance = pool
      if (instance === null) return
      pool = null
      await instance.destroy()
    },

    run,

    stats () {
      const queued = pool?.queueSize ?? 0
      return {
        threads: pool?.threads.length ?? 0,
        queued,
        running: Math.max(0, inFlight - queued),
        ...counts
      }
    }
  }
}

/** piscina's refusals when its own queue is full (it gives them no code, only a message). */
function isQueueLimit (err: unknown): boolean {
  return err instanceof Error &&
    (err.message === 'Task queue is at limit' || err.message === 'No task queue available and all Workers are busy')
}
