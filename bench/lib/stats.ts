/**
 * Latency recording and summaries for the benchmarks. Samples are milliseconds (doubles from
 * `performance.now()`), kept in a growable Float64Array so a run of a few hundred thousand
 * samples costs a few MB and no per-sample allocation.
 */

export interface LatencySummary {
  readonly count: number
  readonly mean_ms: number
  readonly p50_ms: number
  readonly p90_ms: number
  readonly p99_ms: number
  readonly p999_ms: number
  readonly max_ms: number
}

export class LatencyRecorder {
  private samples = new Float64Array(1 << 16)
  private n = 0

  add (ms: number): void {
    if (this.n === this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2)
      bigger.set(this.samples)
      this.samples = bigger
    }
    this.samples[this.n++] = ms
  }

  get count (): number { return this.n }

  /** A copy of the samples, in the order added (e.g. to send to another process). */
  take (): Float64Array { return this.samples.slice(0, this.n) }

  summary (): LatencySummary {
    const sorted = this.samples.slice(0, this.n).sort()
    let sum = 0
    for (const v of sorted) sum += v
    return summaryOf(sorted, sum)
  }
}

/** Nearest-rank summary over every sample of every part (e.g. one part per client process). */
export function summarizeParts (parts: readonly Float64Array[]): LatencySummary {
  let n = 0
  for (const p of parts) n += p.length
  const all = new Float64Array(n)
  let at = 0
  let sum = 0
  for (const p of parts) {
    all.set(p, at)
    at += p.length
    for (const v of p) sum += v
  }
  return summaryOf(all.sort(), sum)
}

/** The summary of ascending samples whose sum is `sum`; all zeros for none. */
function summaryOf (sorted: Float64Array, sum: number): LatencySummary {
  const n = sorted.length
  return {
    count: n,
    mean_ms: round3(n === 0 ? 0 : sum / n),
    p50_ms: round3(percentile(sorted, 50)),
    p90_ms: round3(percentile(sorted, 90)),
    p99_ms: round3(percentile(sorted, 99)),
    p999_ms: round3(percentile(sorted, 99.9)),
    max_ms: round3(n === 0 ? 0 : sorted[n - 1] ?? 0)
  }
}

/** Nearest-rank percentile of an ascending array; 0 for an empty one. */
export function percentile (sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? 0
}

export function round3 (x: number): number { return Math.round(x * 1000) / 1000 }

/** Counts by key (HTTP status, error kind), printed as "200:1234 503:2". */
export class Tally {
  readonly counts: Record<string, number> = {}
  add (key: string | number, by = 1): void {
    const k = String(key)
    this.counts[k] = (this.counts[k] ?? 0) + by
  }

  toString (): string {
    const keys = Object.keys(this.counts).sort()
    return keys.length === 0 ? '-' : keys.map((k) => `${k}:${this.counts[k]}`).join(' ')
  }
}

/**
 * The shape every load run reports: completions counted only inside the measured window
 * (after the warm-up), latencies of exactly those completions.
 */
export interface LoadResult {
  readonly kind: 'http' | 'mqtt' | 'pg'
  readonly concurrency: number
  readonly warmup_s: number
  readonly measured_s: number
  readonly completed: number
  readonly ok: number
  readonly rps: number
  readonly latency: LatencySummary
  /** Responses by HTTP status (or `ok`/`timeout` for MQTT, `ok` for PostgreSQL) inside the window. */
  readonly statuses: Record<string, number>
  /** Failures that are not a status: connection resets, bad bodies, late answers. */
  readonly errors: Record<string, number>
  /** Requests still outstanding when the run stopped and not answered within the drain time. */
  readonly unfinished: number
}

/** One load run's result from what its loop recorded; `ok` is the tally's `ok` (MQTT, PostgreSQL) or given (HTTP). */
export function loadResult (kind: LoadResult['kind'], o: { concurrency: number, warmupS: number, measureS: number }, recorded: { latencies: LatencyRecorder, statuses: Tally, errors: Tally, unfinished: number, ok?: number }): LoadResult {
  const ok = recorded.ok ?? recorded.statuses.counts.ok ?? 0
  return {
    kind,
    concurrency: o.concurrency,
    warmup_s: o.warmupS,
    measured_s: o.measureS,
    completed: recorded.latencies.count,
    ok,
    rps: Math.round(ok / o.measureS),
    latency: recorded.latencies.summary(),
    statuses: recorded.statuses.counts,
    errors: recorded.errors.counts,
    unfinished: recorded.unfinished
  }
}
