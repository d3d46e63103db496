/** One hint phase's answers from every client process, merged into one result. */
import { round3, summarizeParts } from '../lib/stats.js'
import type { WindowResult } from './phase-window.js'
import type { PhaseResultMsg } from './protocol.js'
import type { PublishResult } from './publisher.js'
import type { HintPhaseResult } from './report.js'

/** Per second of publish time: deliveries, largest latency, deliveries over SLOW_MS; pings by second of receipt; trailing empty seconds dropped. */
function perSecond (results: readonly PhaseResultMsg[]): HintPhaseResult['per_second'] {
  const out: Array<{ s: number, deliveries: number, max_ms: number, slow: number, pings: number }> = []
  const n = Math.max(0, ...results.map((r) => r.per_second.count.length))
  for (let i = 0; i < n; i++) {
    let deliveries = 0
    let max = 0
    let slow = 0
    let pings = 0
    for (const r of results) {
      deliveries += r.per_second.count[i] ?? 0
      max = Math.max(max, r.per_second.max_ms[i] ?? 0)
      slow += r.per_second.slow[i] ?? 0
      pings += r.per_second.pings[i] ?? 0
    }
    out.push({ s: i, deliveries, max_ms: round3(max), slow, pings })
  }
  while (out.length > 0 && out[out.length - 1]?.deliveries === 0 && out[out.length - 1]?.pings === 0) out.pop()
  return out
}

export function mergeHintPhase (o: {
  name: string
  kind: HintPhaseResult['kind']
  targetDeliveriesPerS: number
  published: PublishResult
  results: readonly PhaseResultMsg[]
  window: WindowResult
  /** epochMs() when the last hint socket had opened: phases are placed on that timeline. */
  openedAtEpochMs: number
}): HintPhaseResult {
  const { results } = o
  const sum = (f: (r: PhaseResultMsg) => number): number => results.reduce((n, r) => n + f(r), 0)
  const delivered = sum((r) => r.delivered)
  const expected = sum((r) => r.expected)
  const count = sum((r) => r.latencies.length)
  const closes: Record<string, number> = {}
  for (const r of results) for (const [k, v] of Object.entries(r.closes)) closes[k] = (closes[k] ?? 0) + v
  return {
    name: o.name,
    kind: o.kind,
    target_deliveries_per_s: o.targetDeliveriesPerS,
    publish: o.published,
    expected,
    delivered,
    missing: sum((r) => r.missing),
    duplicates: sum((r) => r.duplicates),
    stray: sum((r) => r.stray),
    misrouted: sum((r) => r.misrouted),
    delivered_ratio: expected === 0 ? 0 : delivered / expected,
    deliveries_per_s: round3(delivered / o.published.window_s),
    latency: summarizeParts(results.map((r) => r.latencies)),
    publish_to_gateway_mean_ms: round3(count === 0 ? 0 : sum((r) => r.publish_to_gateway_mean_ms * r.latencies.length) / count),
    gateway_to_client_mean_ms: round3(count === 0 ? 0 : sum((r) => r.gateway_to_client_mean_ms * r.latencies.length) / count),
    client_elu: results.map((r) => round3(r.elu)),
    client_loop_delay_max_ms: results.map((r) => round3(r.loop_delay_max_ms)),
    client_gc_max_ms: results.map((r) => round3(r.gc_max_ms)),
    client_gc_total_ms: results.map((r) => round3(r.gc_total_ms)),
    cpu_percent: o.window.cpu_percent,
    machine_percent: o.window.machine_percent,
    gateway_loop_delay: o.window.gateway_loop_delay,
    gateway_gc: o.window.gateway_gc,
    major_faults: o.window.major_faults,
    vmstat: o.window.vmstat,
    started_s_after_open: round3((Math.min(...results.map((r) => r.started_epoch_ms)) - o.openedAtEpochMs) / 1000),
    per_second: perSecond(results),
    closes
  }
}
