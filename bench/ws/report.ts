/** bench:ws results: the JSON shape, the goals of docs/benchmarks.md ("bench:ws") and the markdown. */
import type { Goal, RunReport } from '../lib/results.js'
import type { LatencySummary } from '../lib/stats.js'
import type { WindowResult } from './phase-window.js'
import type { MemoryReading } from './memory.js'
import type { PublishResult } from './publisher.js'

export interface OpenResult {
  readonly planned: number
  readonly opened: number
  readonly failed: Record<string, number>
  /** Orchestrator's wall time from "open" sent to the last client's answer, s. */
  readonly time_to_open_s: number
  readonly opens_per_s: number
  /** Connect start to `open`, per socket. */
  readonly per_socket: LatencySummary
  readonly per_client_elapsed_ms: number[]
  /** The gateway's own gauges once all were open. */
  readonly gateway_hint_sockets: number | undefined
  readonly gateway_hint_subscriptions: number | undefined
}

export interface MemoryResult {
  /** Set-up done, no socket open. */
  readonly before: MemoryReading
  /** All sockets open, then `idle_s` of idleness. */
  readonly after: MemoryReading
  /** True when both readings had their GCs: then the per-connection figures are after GC. */
  readonly forced_gc: boolean
  readonly idle_s: number
  readonly sockets: number
  readonly rss_per_connection_bytes: number | undefined
  /** The same from the raw readings (garbage included): noisy, for comparison. */
  readonly rss_per_connection_raw_bytes: number | undefined
  readonly heap_used_per_connection_bytes: number | undefined
  readonly idle_series: Array<{ t_s: number, rss_bytes: number | undefined, heap_used_bytes: number | undefined }>
}

export interface HintPhaseResult {
  readonly name: string
  readonly kind: 'warm-up' | 'fixed' | 'step'
  readonly target_deliveries_per_s: number
  readonly publish: PublishResult
  readonly expected: number
  readonly delivered: number
  readonly missing: number
  readonly duplicates: number
  readonly stray: number
  readonly misrouted: number
  readonly delivered_ratio: number
  /** Delivered in the phase / the publish window. */
  readonly deliveries_per_s: number
  readonly latency: LatencySummary
  readonly publish_to_gateway_mean_ms: number
  readonly gateway_to_client_mean_ms: number
  readonly client_elu: number[]
  readonly client_loop_delay_max_ms: number[]
  readonly client_gc_max_ms: number[]
  readonly client_gc_total_ms: number[]
  readonly cpu_percent: Record<string, number>
  readonly machine_percent: WindowResult['machine_percent']
  readonly gateway_loop_delay: WindowResult['gateway_loop_delay']
  readonly gateway_gc: WindowResult['gateway_gc']
  readonly major_faults: WindowResult['major_faults']
  readonly vmstat: WindowResult['vmstat']
  /** Seconds from the last hint socket opening to this phase's second 0. */
  readonly started_s_after_open: number
  readonly per_second: Array<{ s: number, deliveries: number, max_ms: number, slow: number, pings: number }>
  readonly closes: Record<string, number>
  /** Steps only: did it hold (100% delivered, no close, p99 under the bound, publisher on rate)? */
  readonly held?: boolean
  readonly why_not?: string
}

export interface ChatPhaseResult {
  readonly sockets: number
  readonly sockets_opened: number
  readonly open_failed: Record<string, number>
  readonly rate_per_s: number
  readonly sent: number
  readonly completed: number
  readonly bad: number
  readonly unfinished: number
  readonly errors: Record<string, number>
  readonly chats_per_s: number
  readonly first_chunk: LatencySummary
  readonly done: LatencySummary
  readonly client_elu: number
  readonly cpu_percent: Record<string, number>
  readonly machine_percent: WindowResult['machine_percent']
  readonly gateway_loop_delay: WindowResult['gateway_loop_delay']
  readonly gateway_gc: WindowResult['gateway_gc']
  readonly major_faults: WindowResult['major_faults']
  readonly vmstat: WindowResult['vmstat']
  readonly closes: Record<string, number>
}

export interface WsReport extends RunReport {
  /**
   * How far the timing processes' own `performance.timeOrigin` disagreed, ms. Not an error of
   * the results (they share one base, bench/ws/protocol.ts); the reason they do.
   */
  time_origin_spread_ms?: number
  open?: OpenResult
  memory?: MemoryResult
  readonly phases: HintPhaseResult[]
  sustained?: { best_deliveries_per_s: number | undefined, best_step: string | undefined, stopped_at: string | undefined }
  chat?: ChatPhaseResult
  teardown?: Record<string, unknown>
  gateway_output?: { lines: number, by_message: Record<string, number>, first: string[] }
}

export function goals (r: WsReport): Goal[] {
  const out: Goal[] = []
  const planned = r.open?.planned
  const fixed = r.phases.find((p) => p.kind === 'fixed')
  const closedDuring = r.phases.reduce((n, p) => n + Object.values(p.closes).reduce((a, b) => a + b, 0), 0)
  out.push({
    goal: `authenticated hint sockets opened and held (${fmtN(planned)})`,
    target: 'all, none closed',
    measured: r.open === undefined ? 'n/a' : `${fmtN(r.open.opened)} opened, ${fmtN(closedDuring)} closed during the hint phases`,
    pass: r.open === undefined ? undefined : r.open.opened === r.open.planned && closedDuring === 0
  })
  const perConn = r.memory?.rss_per_connection_bytes
  out.push({ goal: 'server RSS per connection', target: '< 4096 B', measured: perConn === undefined ? 'n/a' : `${fmtN(perConn)} B`, pass: perConn === undefined ? undefined : perConn < 4096 })
  out.push({
    goal: `delivered / expected at ${fmtN(fixed?.target_deliveries_per_s)} deliveries/s`,
    target: '100%',
    measured: fixed === undefined ? 'n/a' : `${fmtN(fixed.delivered)} / ${fmtN(fixed.expected)} (${pct(fixed.delivered_ratio)})`,
    pass: fixed === undefined ? undefined : fixed.expected > 0 && fixed.delivered === fixed.expected && fixed.duplicates === 0 && fixed.misrouted === 0
  })
  out.push({
    goal: `p99 publish-to-receive at ${fmtN(fixed?.target_deliveries_per_s)} deliveries/s`,
    target: '< 50 ms',
    measured: fixed === undefined ? 'n/a' : `${fmtMs(fixed.latency.p99_ms)} ms`,
    pass: fixed === undefined || fixed.latency.count === 0 ? undefined : fixed.latency.p99_ms < 50
  })
  const best = r.sustained?.best_deliveries_per_s
  out.push({
    goal: 'sustained deliveries/s (100% delivered, p99 < step bound)',
    target: '>= 50,000/s',
    measured: r.sustained === undefined ? 'n/a' : best === undefined ? 'no step held' : `${fmtN(Math.round(best))}/s`,
    pass: r.sustained === undefined ? undefined : best !== undefined && best >= 50_000
  })
  return out
}

const pct = (v: number): string => `${(v * 100).toFixed(v === 1 ? 0 : 3)}%`
const fmtN = (n: number | undefined): string => n === undefined ? '-' : n.toLocaleString('en-US')
const fmtMs = (n: number | undefined): string => n === undefined ? '-' : n.toFixed(n < 10 ? 2 : 1)
const mb = (b: number | undefined): string => b === undefined ? '?' : (b / 2 ** 20).toFixed(1)
const tally = (t: Record<string, number>): string => { const e = Object.entries(t); return e.length === 0 ? '0' : e.map(([k, v]) => `${k}:${v}`).join(' ') }
/** Our processes, then everyone else on the machine (and the hypervisor's steal, when any). */
const cpu = (c: Record<string, number>, m?: WindowResult['machine_percent']): string =>
  Object.entries(c).filter(([k, v]) => v > 0 || k === 'gateway').map(([k, v]) => `${k} ${v}`).join(', ') +
  (m === undefined ? '' : `; others ${m.others}${m.steal > 0 ? `, steal ${m.steal}` : ''}`)

/** "pings; slow deliveries in seconds with pings / in the other seconds": are the tails the pings'? */
function pingSplit (p: HintPhaseResult): string {
  let pings = 0
  let slowWith = 0
  let slowWithout = 0
  for (const x of p.per_second) {
    pings += x.pings
    if (x.pings > 0) slowWith += x.slow
    else slowWithout += x.slow
  }
  return `${fmtN(pings)}; ${fmtN(slowWith)} / ${fmtN(slowWithout)}`
}

export function markdown (r: WsReport): string {
  const m = r.machine
  const s = r.settings
  const L: string[] = []
  L.push(`### bench:ws — ${r.started_at}`, '')
  L.push(`Command: \`${r.command}\``, '')
  L.push(`Machine: ${m.cpus} x ${m.cpu_model}, ${m.total_mem_mb} MB, ${m.os}; Node ${m.node}; Mosquitto ${m.mosquitto}; ` +
    `PostgreSQL ${String(s.postgres_version ?? '-')}; ulimit -n ${m.ulimit_nofile ?? '?'}; load average ${m.loadavg_1m_at_start} at start` +
    `${m.git_commit !== undefined ? `; commit ${m.git_commit}` : ''}`, '')
  L.push(`Set-up: ${fmtN(s.sockets as number)} hint sockets over ${fmtN(s.sessions as number)} sessions (${String(s.per_session)} each) of one user, ` +
    `held by ${String(s.client_procs)} client processes (\`ws\` ${String(s.ws_version)}); hints published with QoS ${String(s.qos)} by one mqtt.js client; ` +
    `publisher and clients time hints on one clock (monotonic + one epoch base; their own timeOrigins disagreed by ${r.time_origin_spread_ms === undefined ? '?' : `${r.time_origin_spread_ms.toFixed(3)} ms`}).`, '')
  if (r.open !== undefined || r.memory !== undefined) {
    L.push('| measure | value |', '|---|---|')
    const o = r.open
    if (o !== undefined) {
      L.push(`| time to open ${fmtN(o.planned)} sockets | ${o.time_to_open_s.toFixed(2)} s (${fmtN(Math.round(o.opens_per_s))}/s, ${String(s.open_concurrency)} handshakes in flight; per socket p50 ${fmtMs(o.per_socket.p50_ms)} ms, p99 ${fmtMs(o.per_socket.p99_ms)} ms) |`)
      L.push(`| opened / planned | ${fmtN(o.opened)} / ${fmtN(o.planned)}; failed: ${tally(o.failed)}; gateway gauges: ${fmtN(o.gateway_hint_sockets)} hint sockets, ${fmtN(o.gateway_hint_subscriptions)} MQTT hint subscriptions |`)
    }
    const mem = r.memory
    if (mem !== undefined) {
      const b = mem.forced_gc ? mem.before.rss_after_gc_bytes : mem.before.rss_raw_bytes
      const a = mem.forced_gc ? mem.after.rss_after_gc_bytes : mem.after.rss_raw_bytes
      L.push(`| server RSS per connection | **${fmtN(mem.rss_per_connection_bytes)} B** (VmRSS ${mb(b)} -> ${mb(a)} MB${mem.forced_gc ? ', each after two forced full GCs' : ', no forced GC'}; ` +
        `V8 heapUsed ${fmtN(mem.heap_used_per_connection_bytes)} B of it; without the GCs ${fmtN(mem.rss_per_connection_raw_bytes)} B) |`)
    }
    L.push('')
  }
  if (r.phases.length > 0) {
    L.push('| phase | target deliveries/s | hints/s published | delivered / expected | deliveries/s | p50 ms | p99 ms | max ms | server pings; > 50 ms in seconds with / without pings | closes | CPU % of one core | result |')
    L.push('|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|')
    for (const p of r.phases) {
      const result = p.kind === 'step' ? (p.held === true ? 'held' : `not held: ${p.why_not ?? '?'}`) : p.kind === 'warm-up' ? 'warm-up (not counted)' : '-'
      L.push(`| ${p.name} | ${fmtN(p.target_deliveries_per_s)} | ${fmtN(Math.round(p.publish.hints_per_s))} | ${fmtN(p.delivered)} / ${fmtN(p.expected)} (${pct(p.delivered_ratio)}) | ` +
        `${fmtN(Math.round(p.deliveries_per_s))} | ${fmtMs(p.latency.p50_ms)} | ${fmtMs(p.latency.p99_ms)} | ${fmtMs(p.latency.max_ms)} | ${pingSplit(p)} | ${tally(p.closes)} | ${cpu(p.cpu_percent, p.machine_percent)} | ${result} |`)
    }
    L.push('')
    if (r.sustained !== undefined) {
      L.push(`Sustained: **${r.sustained.best_deliveries_per_s === undefined ? 'no step held' : `${fmtN(Math.round(r.sustained.best_deliveries_per_s))} deliveries/s`}**` +
        `${r.sustained.best_step !== undefined ? ` (step ${r.sustained.best_step})` : ''}` +
        `${r.sustained.stopped_at !== undefined ? `; stopped at ${r.sustained.stopped_at}` : '; every step held'}.`, '')
    }
  }
  const c = r.chat
  if (c !== undefined) {
    L.push('| streamed chat | sockets | chats/s offered | completed / sent | first chunk p50 / p99 ms | done p50 / p99 / max ms | errors | CPU % of one core |')
    L.push('|---|---:|---:|---:|---:|---:|---|---|')
    const errs = { ...c.errors, ...(c.bad > 0 ? { bad: c.bad } : {}), ...(c.unfinished > 0 ? { unfinished: c.unfinished } : {}) }
    L.push(`| echo worker, ${String(s.echo_chunks)} chunks | ${fmtN(c.sockets_opened)} | ${fmtN(c.rate_per_s)} | ${fmtN(c.completed)} / ${fmtN(c.sent)} | ` +
      `${fmtMs(c.first_chunk.p50_ms)} / ${fmtMs(c.first_chunk.p99_ms)} | ${fmtMs(c.done.p50_ms)} / ${fmtMs(c.done.p99_ms)} / ${fmtMs(c.done.max_ms)} | ${tally(errs)} | ${cpu(c.cpu_percent, c.machine_percent)} |`, '')
  }
  L.push('| goal | target | measured | result |', '|---|---|---|---|')
  for (const g of goals(r)) L.push(`| ${g.goal} | ${g.target} | ${g.measured} | ${g.pass === undefined ? 'not measured' : g.pass ? 'PASS' : 'FAIL'} |`)
  if (r.gateway_output !== undefined && r.gateway_output.lines > 0) {
    L.push('', `Gateway output at LOG_LEVEL=warn: ${r.gateway_output.lines} lines: ` +
      Object.entries(r.gateway_output.by_message).map(([k, v]) => `${v} x \`${k}\``).join('; '))
  }
  if (r.failures.length > 0) {
    L.push('', 'Failures:')
    for (const f of r.failures) L.push(`- ${f.split('\n')[0] ?? f}`)
  }
  return L.join('\n')
}
