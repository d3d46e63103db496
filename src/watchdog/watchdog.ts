/**
 * The main thread's side of the watchdog: starts the watchdog thread, writes the heartbeat
 * and the diagnostics it would report (last route, pending counts, heap), and logs when the
 * loop comes back from a stall the watchdog saw (WATCHDOG_EXIT off). Everything is started by
 * start() and stopped by stop().
 */
import { Worker } from 'node:worker_threads'
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { SLOT, SLOTS, WATCHDOG_EXIT_STATUS, WATCHDOG_SIGNAL, type WatchdogThreadData } from './shared-state.js'
import { watchdogThreadMain } from './watchdog-thread.js'

export interface WatchdogOptions {
  stallMs: number
  exitOnStall: boolean
  /** Route templates, so the thread can name the last one without strings in shared memory. */
  routes: readonly string[]
  clock: Clock
  log: Logger
  pendingRequests: () => number
  websockets: () => number
  onStall?: (stallMs: number) => void
}

export interface Watchdog {
  start: () => void
  stop: () => Promise<void>
  /** Called as each request starts: the route the watchdog will name if the loop stalls now. */
  noteRoute: (route: string) => void
}

// CommonJS source for an `eval` worker: `require` and `workerData` are in scope there.
const THREAD_SOURCE = `(${watchdogThreadMain.toString()})(require('node:worker_threads').workerData)`

export function createWatchdog (options: WatchdogOptions): Watchdog {
  const shared = new BigInt64Array(new SharedArrayBuffer(SLOTS * 8))
  const routes = ['(none)', ...options.routes]
  const routeIndex = new Map(routes.map((r, i) => [r, BigInt(i)]))
  // Beat several times per stall period, so a stall is seen within stallMs + one beat + one check.
  const beatMs = Math.max(20, Math.min(1000, Math.floor(options.stallMs / 5)))
  const checkMs = Math.max(10, Math.min(500, Math.floor(options.stallMs / 10)))
  let worker: Worker | null = null
  let timer: unknown = null

  function beat (): void {
    timer = options.clock.setTimeout(beat, beatMs)
    Atomics.store(shared, SLOT.heartbeat, BigInt(Date.now()))
    Atomics.store(shared, SLOT.pendingRequests, BigInt(options.pendingRequests()))
    Atomics.store(shared, SLOT.websockets, BigInt(options.websockets()))
    Atomics.store(shared, SLOT.heapUsed, BigInt(process.memoryUsage().heapUsed))
    const stalled = Number(Atomics.exchange(shared, SLOT.reportedStallMs, 0n))
    if (stalled > 0) {
      options.log.warn({ stall_ms: stalled }, 'event loop resumed after a stall the watchdog reported')
      options.onStall?.(stalled)
    }
  }

  return {
    start () {
      if (worker !== null) return
      Atomics.store(shared, SLOT.heartbeat, BigInt(Date.now()))
      const workerData: WatchdogThreadData & { slot: Record<string, number>, signal: string, exitStatus: number } = {
        shared: shared.buffer as SharedArrayBuffer, routes, stallMs: options.stallMs, checkMs, exitOnStall: options.exitOnStall,
        slot: { ...SLOT }, signal: WATCHDOG_SIGNAL, exitStatus: WATCHDOG_EXIT_STATUS
      }
      // No execArgv: the thread's source is plain JavaScript and needs no loader.
      worker = new Worker(THREAD_SOURCE, { eval: true, workerData, execArgv: [] })
      // The watchdog must never be what keeps the process alive.
      worker.unref()
      worker.on('error', (err) => { options.log.error({ err: err.stack }, 'watchdog thread failed; event-loop stalls will not be detected') })
      beat()
      options.log.info({ stall_ms: options.stallMs, exit_on_stall: options.exitOnStall }, 'watchdog started')
    },
    async stop () {
      if (timer !== null) options.clock.clearTimeout(timer)
      timer = null
      const w = worker
      worker = null
      if (w !== null) await w.terminate()
    },
    noteRoute (route) {
      const index = routeIndex.get(route)
      if (index !== undefined) Atomics.store(shared, SLOT.route, index)
    }
  }
}
