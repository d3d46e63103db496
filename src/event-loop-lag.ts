/**
 * Event-loop delay from perf_hooks (sampled natively every 20 ms, no JavaScript timer of
 * ours doing the measuring), reported net of that 20 ms period. Two views: the p99 over a rolling window for health (once a
 * window has been read and is older than `windowMs`, it restarts, so an old stall does not
 * mark health degraded forever), and each second's largest delay for the metrics histogram,
 * taken by a one-second timer owned by start()/stop().
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { Clock } from './clock.js'

export interface LagMonitor {
  start: () => void
  stop: () => void
  p99Ms: () => number
}

/** monitorEventLoopDelay's sampling period: an idle loop reads this much delay, which is not lag. */
const RESOLUTION_MS = 20

export function createLagMonitor (options: { clock: Clock, windowMs?: number, sampleMs?: number, onSample?: (maxSeconds: number) => void }): LagMonitor {
  const { clock } = options
  const windowMs = options.windowMs ?? 30_000
  const sampleMs = options.sampleMs ?? 1000
  let window: IntervalHistogram | null = null
  let interval: IntervalHistogram | null = null
  let windowStart = 0
  let timer: unknown = null
  let dueAt = 0
  /** The window histogram's max when last sampled (ns), to see a new maximum arrive. */
  let windowMaxSeen = 0

  function schedule (): void {
    dueAt = clock.now() + sampleMs
    timer = clock.setTimeout(sample, sampleMs)
  }

  function sample (): void {
    // reset() below also forgets the interval histogram's previous tick, so when this timer
    // runs after a stall before that histogram's own (also overdue) tick, the tick records
    // nothing and the stall is lost (seen: a 1.5 s stall read as 0.58 s, watchdog test). Two
    // witnesses that cannot lose it: the window histogram, which is not reset here (a new
    // maximum there arrived since the last sample), and how late this timer itself fired.
    const lateMs = Math.max(0, clock.now() - dueAt)
    schedule()
    if (interval === null || window === null) return
    let newWindowMaxMs = 0
    if (window.count > 0 && window.max > windowMaxSeen) {
      newWindowMaxMs = window.max / 1e6
      windowMaxSeen = window.max
    }
    const histogramMs = interval.count === 0 ? 0 : interval.max / 1e6
    if (interval.count === 0 && lateMs === 0 && newWindowMaxMs === 0) return
    // Net of the sampling period (as fastify's under-pressure does): an idle loop reads 0.
    const delayMs = Math.max(histogramMs - RESOLUTION_MS, newWindowMaxMs - RESOLUTION_MS, lateMs, 0)
    options.onSample?.(delayMs / 1000)
    interval.reset()
  }

  return {
    start () {
      if (window !== null) return
      window = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
      window.enable()
      interval = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
      interval.enable()
      windowStart = clock.now()
      schedule()
    },
    stop () {
      window?.disable()
      interval?.disable()
      window = null
      interval = null
      if (timer !== null) clock.clearTimeout(timer)
      timer = null
    },
    p99Ms () {
      if (window === null || window.count === 0) return 0
      // ns -> ms, 2 decimals, net of the sampling period
      const p99 = Math.round(Math.max(0, window.percentile(99) / 1e6 - RESOLUTION_MS) * 100) / 100
      if (clock.now() - windowStart >= windowMs) {
        window.reset()
        windowMaxSeen = 0
        windowStart = clock.now()
      }
      return p99
    }
  }
}
