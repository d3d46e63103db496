/**
 * Who else used the machine during a phase. The box is shared: a p99 blown by someone's test
 * run must be told apart from one blown by the gateway. From /proc/stat (Linux): the whole
 * machine's busy and steal time; minus our processes' CPU, that is everyone else's.
 */
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { cpuSeconds, procStat } from '../lib/cpu.js'
import { seriesOf } from '../lib/metrics.js'

export interface MachineCpu { readonly busy: number, readonly steal: number, readonly total: number }

/** Aggregate jiffies of the first `cpu` line; undefined where /proc/stat is missing. */
export function machineCpu (): MachineCpu | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user).
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number)
    if (f.length < 8 || f.some((x) => !Number.isFinite(x))) return undefined
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f as [number, number, number, number, number, number, number, number]
    const busy = user + nice + system + irq + softirq
    return { busy, steal, total: busy + idle + iowait + steal }
  } catch {
    return undefined
  }
}

/** Major page faults of `pid` (a fault that waited for I/O, e.g. code paged out under memory pressure). */
export function majorFaults (pid: number | undefined): number | undefined {
  const rest = procStat(pid)
  return rest === undefined ? undefined : Number(rest[9])
}

/** Counters from /proc/vmstat that show the kernel taking memory back (page-outs, refaults). */
const VMSTAT_KEYS = ['pgmajfault', 'workingset_refault_file', 'workingset_refault_anon', 'compact_stall', 'allocstall_normal', 'pgscan_direct']

export function vmstat (): Record<string, number> {
  const out: Record<string, number> = {}
  try {
    for (const line of readFileSync('/proc/vmstat', 'utf8').split('\n')) {
      const [k, v] = line.split(' ')
      if (k !== undefined && VMSTAT_KEYS.includes(k)) out[k] = Number(v)
    }
  } catch { /* not Linux */ }
  return out
}

/** Busy and steal between two samples, in percent of one core (2 cores busy = 200). */
export function machinePercent (a: MachineCpu | undefined, b: MachineCpu | undefined, cores: number): { busy: number, steal: number } | undefined {
  if (a === undefined || b === undefined || b.total <= a.total) return undefined
  const span = b.total - a.total
  return { busy: Math.round(((b.busy - a.busy) / span) * cores * 100), steal: Math.round(((b.steal - a.steal) / span) * cores * 100) }
}

/**
 * The gateway's `tether_event_loop_delay_seconds` histogram (each second's largest event-loop
 * delay) between two scrapes: how many seconds passed and how many had a delay over each bound
 * (ms). The gateway reports it net of its 20 ms sampling period (src/event-loop-lag.ts);
 * builds before that change read about 20 ms for an idle loop.
 */
export function loopDelaySeconds (before: Record<string, number | string>, after: Record<string, number | string>): { seconds: number, over_ms: Record<string, number> } | undefined {
  const count = (m: Record<string, number | string>): number | undefined => {
    const v = m.tether_event_loop_delay_seconds_count
    return typeof v === 'number' ? v : undefined
  }
  const b = count(before)
  const a = count(after)
  if (a === undefined || b === undefined) return undefined
  const seconds = a - b
  const overMs: Record<string, number> = {}
  for (const [key, v] of Object.entries(after)) {
    const m = /^tether_event_loop_delay_seconds_bucket\{le="([^"]+)"\}$/.exec(key)
    if (m?.[1] === undefined || m[1] === '+Inf' || typeof v !== 'number') continue
    const was = before[key]
    const within = v - (typeof was === 'number' ? was : 0)
    const over = seconds - within
    if (over > 0) overMs[String(Math.round(Number(m[1]) * 1000))] = over
  }
  return { seconds, over_ms: overMs }
}

/** Our processes by name; `publisher` is this process (measured with process.cpuUsage). */
export type Pids = Record<string, number | undefined>

function ourCpu (pids: Pids): Record<string, number> {
  const s: Record<string, number> = {}
  for (const [name, pid] of Object.entries(pids)) {
    const u = process.cpuUsage()
    const v = name === 'publisher' ? (u.user + u.system) / 1e6 : cpuSeconds(pid)
    if (v !== undefined) s[name] = v
  }
  return s
}

export interface WindowResult {
  /** Percent of one core per process over the window; the client processes summed as `clients`. */
  readonly cpu_percent: Record<string, number>
  /** The whole machine: busy and steal, and `others` = busy minus our processes (percent of one core). */
  readonly machine_percent: { busy: number, steal: number, others: number } | undefined
  readonly gateway_loop_delay: { seconds: number, over_ms: Record<string, number> } | undefined
  readonly gateway_gc: Record<string, { count: number, sum_ms: number, over_100ms: number }>
  /** Major page faults per process of ours, and the machine's /proc/vmstat counters, over the window. */
  readonly major_faults: Record<string, number>
  readonly vmstat: Record<string, number>
}

const LOOP_RE = /^(tether_event_loop_delay_seconds_(bucket|count)|nodejs_gc_duration_seconds_(sum|count|bucket))/

/**
 * The gateway's GC pauses between two scrapes, from prom-client's `nodejs_gc_duration_seconds`
 * (by kind: minor, major, incremental, weakcb): count, total seconds, and how many took over 0.1 s.
 */
export function gcBetween (before: Record<string, number | string>, after: Record<string, number | string>): Record<string, { count: number, sum_ms: number, over_100ms: number }> {
  const out: Record<string, { count: number, sum_ms: number, over_100ms: number }> = {}
  const d = (key: string): number => {
    const a = after[key]
    const b = before[key]
    return (typeof a === 'number' ? a : 0) - (typeof b === 'number' ? b : 0)
  }
  for (const key of Object.keys(after)) {
    const m = /^nodejs_gc_duration_seconds_count\{kind="(\w+)"\}$/.exec(key)
    if (m?.[1] === undefined) continue
    const kind = m[1]
    const count = d(key)
    if (count <= 0) continue
    const within = d(`nodejs_gc_duration_seconds_bucket{le="0.1",kind="${kind}"}`)
    out[kind] = { count, sum_ms: Math.round(d(`nodejs_gc_duration_seconds_sum{kind="${kind}"}`) * 1e6) / 1000, over_100ms: count - within }
  }
  return out
}

/** Starts measuring who used the CPU, and how late the gateway's loop ran, until finish(). */
export async function startWindow (pids: Pids, gatewayPort: number, cores: number): Promise<{ finish: () => Promise<WindowResult> }> {
  const loop0 = await seriesOf(gatewayPort, LOOP_RE)
  const at0 = performance.now()
  const ours0 = ourCpu(pids)
  const machine0 = machineCpu()
  const faults0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, majorFaults(k === 'publisher' ? process.pid : pid)]))
  const vm0 = vmstat()
  return {
    async finish () {
      const ours1 = ourCpu(pids)
      const machine1 = machineCpu()
      const wallS = (performance.now() - at0) / 1000
      const loop1 = await seriesOf(gatewayPort, LOOP_RE)
      const cpu: Record<string, number> = {}
      let sum = 0
      for (const [name, v] of Object.entries(ours1)) {
        const before = ours0[name]
        if (before === undefined || wallS <= 0) continue
        const p = Math.round(((v - before) / wallS) * 100)
        sum += p
        const key = name.startsWith('client') ? 'clients' : name
        cpu[key] = (cpu[key] ?? 0) + p
      }
      const m = machinePercent(machine0, machine1, cores)
      return {
        cpu_percent: cpu,
        machine_percent: m === undefined ? undefined : { ...m, others: Math.max(0, m.busy - sum) },
        gateway_loop_delay: loopDelaySeconds(loop0, loop1),
        gateway_gc: gcBetween(loop0, loop1),
        major_faults: Object.fromEntries(Object.entries(pids).flatMap(([k, pid]) => {
          const a = faults0[k]
          const b = majorFaults(k === 'publisher' ? process.pid : pid)
          return a === undefined || b === undefined ? [] : [[k, b - a]]
        })),
        vmstat: Object.fromEntries(Object.entries(vmstat()).map(([k, v]) => [k, v - (vm0[k] ?? v)]))
      }
    }
  }
}
