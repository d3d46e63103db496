/**
 * Open-loop pacing: item i is due at t0 + i / rate, whatever happened to the items before it
 * (no coordinated omission: a slow system gets the same offered load, not a gentler one). A
 * 1 ms timer sends everything that has come due; a busy loop would cost a core on a 2-core box.
 */
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

export interface PaceResult {
  readonly sent: number
  /** First send to last send, ms. */
  readonly elapsedMs: number
  /** Longest time an item waited past its due time, ms: large means the sender could not keep up. */
  readonly maxLagMs: number
  /** True when `maxMs` ran out before all `total` items were sent. */
  readonly cutShort: boolean
}

export async function paced (o: { ratePerS: number, total: number, maxMs: number, send: (i: number) => void }): Promise<PaceResult> {
  const t0 = performance.now()
  const intervalMs = 1000 / o.ratePerS
  let sent = 0
  let maxLagMs = 0
  let last = t0
  while (sent < o.total) {
    const now = performance.now()
    if (now - t0 > o.maxMs) return { sent, elapsedMs: last - t0, maxLagMs, cutShort: true }
    const due = Math.min(o.total, Math.floor((now - t0) / intervalMs) + 1)
    while (sent < due) {
      const lag = performance.now() - t0 - sent * intervalMs
      if (lag > maxLagMs) maxLagMs = lag
      o.send(sent++)
    }
    last = performance.now()
    if (sent < o.total) await sleep(1)
  }
  return { sent, elapsedMs: last - t0, maxLagMs, cutShort: false }
}
