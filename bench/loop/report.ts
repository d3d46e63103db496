/**
 * What bench:loop reports: the gateway's event-loop delay read off /metrics (the per-second
 * maximum histogram, as a difference between the window's two ends), the goals of
 * docs/benchmarks.md ("bench:loop"), and the markdown printed at the end.
 */
import type { Goal, RunReport } from '../lib/results.js'
import type { LoopMode } from './gateway.js'
import type { StreamResult } from './load.js'

/** Cumulative buckets (upper bound in seconds, count), as Prometheus exposes them. */
export interface Histogram {
  readonly buckets: ReadonlyArray<readonly [number, number]>
  readonly sum: number
  readonly count: number
}

/** One histogram out of Prometheus text (`<name>_bucket{le=...}`, `_sum`, `_count`). */
export function parseHistogram (text: string, name: string): Histogram {
  const buckets: Array<[number, number]> = []
  let sum = 0
  let count = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}_bucket{`)) {
      const m = /le="([^"]+)"\}\s+(\S+)/.exec(line)
      if (m !== null) buckets.push([m[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[1]), Number(m[2])])
    } else if (line.startsWith(`${name}_sum `)) {
      sum = Number(line.slice(name.length + 5))
    } else if (line.startsWith(`${name}_count `)) {
      count = Number(line.slice(name.length + 7))
    }
  }
  buckets.sort((a, b) => a[0] - b[0])
  return { buckets, sum, count }
}

/** What was observed between two scrapes of the same histogram. */
export function histogramDelta (before: Histogram, after: Histogram): Histogram {
  const earlier = new Map(before.buckets.map(([le, n]) => [le, n]))
  return {
    buckets: after.buckets.map(([le, n]) => [le, n - (earlier.get(le) ?? 0)] as const),
    sum: after.sum - before.sum,
    count: after.count - before.count
  }
}

/** The smallest bucket bound under which at least `q` of the observations fall. */
function bucketQuantile (h: Histogram, q: number): number | undefined {
  if (h.count <= 0) return undefined
  for (const [le, n] of h.buckets) if (n >= q * h.count) return le
  return Number.POSITIVE_INFINITY
}

export interface DelaySummary {
  /** One-second intervals observed. */
  readonly seconds: number
  /** Mean of the per-second maxima, ms. */
  readonly mean_max_ms: number | undefined
  /** Bucket bounds (ms) under which the median, 99% and all per-second maxima fall. */
  readonly p50_max_le_ms: number | undefined
  readonly p99_max_le_ms: number | undefined
  readonly max_le_ms: number | undefined
  /** Seconds whose largest sample was over 50 ms, and over 100 ms (a sample is at least the 20 ms interval). */
  readonly seconds_over_50ms: number
  readonly seconds_over_100ms: number
}

export function summarizeDelay (h: Histogram): DelaySummary {
  const under = (bound: number): number => h.buckets.find(([le]) => le === bound)?.[1] ?? 0
  const ms = (s: number | undefined): number | undefined => s === undefined ? undefined : Number.isFinite(s) ? Math.round(s * 1000) : Number.POSITIVE_INFINITY
  return {
    seconds: h.count,
    mean_max_ms: h.count > 0 ? Math.round((h.sum / h.count) * 1e5) / 100 : undefined,
    p50_max_le_ms: ms(bucketQuantile(h, 0.5)),
    p99_max_le_ms: ms(bucketQuantile(h, 0.99)),
    max_le_ms: ms(bucketQuantile(h, 1)),
    seconds_over_50ms: h.count - under(0.05),
    seconds_over_100ms: h.count - under(0.1)
  }
}

export interface ModeResult {
  readonly mode: LoopMode
  readonly window_started_at: string
  readonly window_s: number
  readonly loadavg_1m_before: number
  readonly loadavg_1m_after: number
  readonly login?: StreamResult
  readonly chat?: StreamResult
  readonly health?: StreamResult
  readonly lag: {
    /** GET /api/health event_loop.lag_p99_ms read at the window's end: p99 of every 20 ms sample since the window's start. */
    readonly health_p99_ms?: number
    /** tether_event_loop_lag_p99_seconds at the window's end, in ms (the same window). */
    readonly metrics_p99_ms?: number
    /** The prober's last and largest lag_p99_ms seen in the window. */
    readonly prober_last_ms?: number
    readonly prober_max_ms?: number
    /** tether_event_loop_delay_seconds over the window: each second's largest delay. */
    readonly per_second_max?: DelaySummary
  }
  /** Percent of one core over the window: gateway, broker, worker, postgres, load, probe. */
  readonly cpu_percent: Record<string, number>
  /** Stalls past WATCHDOG_STALL_MS in the window (tether_watchdog_stalls_total). */
  readonly watchdog_stalls?: number
  readonly gateway_rss_mb?: number
  readonly failures: string[]
}

export interface LoopReport extends RunReport {
  readonly modes: ModeResult[]
}

/**
 * The sampling interval of the gateway's lag monitor (src/event-loop-lag.ts, resolution 20).
 * monitorEventLoopDelay records the whole time between two of its timer ticks, so every sample
 * is at least this long: an idle loop reports a p99 of about 20.2 ms. Net of it, the number is
 * how late the loop ran the tick.
 */
export const LAG_RESOLUTION_MS = 20

export function netOfInterval (ms: number | undefined): number | undefined {
  return ms === undefined ? undefined : Math.max(0, Math.round((ms - LAG_RESOLUTION_MS) * 100) / 100)
}

/** Pool mode: health p99 < 10 ms, lag p99 < 20 ms. Inline mode has no goal: it shows the other side. */
export function goals (r: LoopReport): Goal[] {
  const pool = r.modes.find((m) => m.mode === 'pool')
  // No answer at all is no measurement, not a p99 of 0.
  const healthP99 = pool?.health !== undefined && pool.health.latency.count > 0 ? pool.health.latency.p99_ms : undefined
  const lagP99 = pool?.lag.health_p99_ms
  return [
    { goal: 'GET /api/health p99, pool mode', target: '< 10 ms', measured: fmtMs(healthP99), pass: healthP99 === undefined ? undefined : healthP99 < 10 },
    { goal: 'event-loop lag p99 (as /api/health reports it), pool mode', target: '< 20 ms', measured: `${fmtMs(lagP99)} (net of the ${LAG_RESOLUTION_MS} ms interval: ${fmtMs(netOfInterval(lagP99))})`, pass: lagP99 === undefined ? undefined : lagP99 < 20 }
  ]
}

function fmtMs (v: number | undefined): string {
  if (v === undefined) return 'n/a'
  if (!Number.isFinite(v)) return '> 5000 ms'
  return v >= 100 ? `${Math.round(v)} ms` : `${Math.round(v * 10) / 10} ms`
}

function fmtRate (s: StreamResult | undefined): string {
  return s === undefined ? 'n/a' : `${Math.round(s.achieved_per_s * 10) / 10} / ${s.target_per_s}`
}

function statuses (s: StreamResult | undefined): string {
  if (s === undefined) return 'n/a'
  const parts = Object.entries(s.statuses).sort().map(([k, n]) => `${k}: ${n}`)
  for (const [k, n] of Object.entries(s.errors).sort()) parts.push(`${k}: ${n}`)
  if (s.skipped > 0) parts.push(`not sent (client cap): ${s.skipped}`)
  if (s.unfinished > 0) parts.push(`unfinished: ${s.unfinished}`)
  return parts.join(', ')
}

function le (v: number | undefined): string {
  if (v === undefined) return 'n/a'
  return Number.isFinite(v) ? `≤ ${v} ms` : '> 5000 ms'
}

export function markdown (r: LoopReport): string {
  const m = r.machine
  const cols = r.modes.map((x) => x.mode === 'pool' ? 'pool (threads)' : 'inline (`THREAD_INLINE=1`)')
  const row = (label: string, f: (x: ModeResult) => string): string => `| ${label} | ${r.modes.map(f).join(' | ')} |`
  const lines = [
    '## bench:loop results',
    '',
    `Command: \`${r.command}\``,
    `Started ${r.started_at}; ${m.cpus} × ${m.cpu_model}, ${m.total_mem_mb} MB, ${m.os}; Node ${m.node}, Mosquitto ${m.mosquitto}, PostgreSQL ${String(r.settings.postgres_version ?? 'n/a')}; git ${m.git_commit ?? 'n/a'}.`,
    `Load average (1 min): ${m.loadavg_1m_at_start} at start; ${r.modes.map((x) => `${x.mode} window ${x.loadavg_1m_before} → ${x.loadavg_1m_after}`).join(', ')}.`,
    '',
    `| per ${r.modes[0]?.window_s ?? '?'} s window | ${cols.join(' | ')} |`,
    `|---|${r.modes.map(() => '---').join('|')}|`,
    row('logins/s achieved / offered', (x) => fmtRate(x.login)),
    row('login p50 / p99 (all answers)', (x) => `${fmtMs(x.login?.latency.p50_ms)} / ${fmtMs(x.login?.latency.p99_ms)}`),
    row('login 200 p50 / p99', (x) => `${fmtMs(x.login?.ok_latency.p50_ms)} / ${fmtMs(x.login?.ok_latency.p99_ms)}`),
    row('login answers', (x) => statuses(x.login)),
    row('chats/s achieved / offered', (x) => fmtRate(x.chat)),
    row('chat p50 / p99 (all answers)', (x) => `${fmtMs(x.chat?.latency.p50_ms)} / ${fmtMs(x.chat?.latency.p99_ms)}`),
    row('chat answers', (x) => statuses(x.chat)),
    row('**/api/health p50 / p99 / max**', (x) => `${fmtMs(x.health?.latency.p50_ms)} / **${fmtMs(x.health?.latency.p99_ms)}** / ${fmtMs(x.health?.latency.max_ms)}`),
    row('/api/health probes answered / sent', (x) => x.health === undefined ? 'n/a' : `${x.health.latency.count} / ${x.health.sent}${x.health.skipped > 0 ? ` (+${x.health.skipped} not sent)` : ''}`),
    row('**lag p99** (`/api/health`, window)', (x) => `**${fmtMs(x.lag.health_p99_ms)}**`),
    row('lag p99 (`tether_event_loop_lag_p99_seconds`)', (x) => fmtMs(x.lag.metrics_p99_ms)),
    row(`lag p99 net of the ${LAG_RESOLUTION_MS} ms sampling interval`, (x) => fmtMs(netOfInterval(x.lag.health_p99_ms))),
    row('largest delay per second: p50 / p99 / max', (x) => x.lag.per_second_max === undefined ? 'n/a' : `${le(x.lag.per_second_max.p50_max_le_ms)} / ${le(x.lag.per_second_max.p99_max_le_ms)} / ${le(x.lag.per_second_max.max_le_ms)}`),
    row('seconds with a sample > 50 ms / > 100 ms', (x) => x.lag.per_second_max === undefined ? 'n/a' : `${x.lag.per_second_max.seconds_over_50ms} / ${x.lag.per_second_max.seconds_over_100ms} of ${x.lag.per_second_max.seconds}`),
    row('CPU % of one core', (x) => Object.entries(x.cpu_percent).map(([k, v]) => `${k} ${v}`).join(', ')),
    '',
    '| goal | target | measured | |',
    '|---|---|---|---|',
    ...goals(r).map((g) => `| ${g.goal} | ${g.target} | ${g.measured} | ${g.pass === undefined ? 'n/a' : g.pass ? 'met' : 'MISSED'} |`)
  ]
  const failures = [...r.failures, ...r.modes.flatMap((x) => x.failures.map((f) => `${x.mode}: ${f}`))]
  if (failures.length > 0) lines.push('', 'Failures:', ...failures.map((f) => `- ${f}`))
  return lines.join('\n')
}
