/**
 * CPU time of our child processes from /proc (Linux), so a report on a 2-core box shows who
 * used the cores: gateway, broker, worker or the load generator. Elsewhere it reports nothing.
 */
import { readFileSync } from 'node:fs'

/** USER_HZ; 100 on every Linux we run on (sysconf(_SC_CLK_TCK)). */
const TICKS_PER_S = 100

/** utime + stime of `pid` in seconds, or undefined if /proc is unavailable. */
export function cpuSeconds (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(rest[11]) + Number(rest[12])) / TICKS_PER_S
  } catch {
    return undefined
  }
}

export type CpuSample = Record<string, number | undefined>

export function sampleCpu (pids: Record<string, number | undefined>): CpuSample {
  const out: CpuSample = {}
  for (const [name, pid] of Object.entries(pids)) out[name] = cpuSeconds(pid)
  return out
}

/** Percent of one core each process used between two samples `wallS` seconds apart. */
export function cpuPercent (before: CpuSample, after: CpuSample, wallS: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, a] of Object.entries(after)) {
    const b = before[name]
    if (a === undefined || b === undefined || wallS <= 0) continue
    out[name] = Math.round(((a - b) / wallS) * 100)
  }
  return out
}

/**
 * A set of processes that changes while we watch, such as the PostgreSQL backends serving the
 * bench database (a pool opens and closes connections): each call lists the current pids.
 */
export type ProcessGroup = () => Promise<number[]>

export type GroupSample = Map<number, number>

export async function sampleGroup (group: ProcessGroup): Promise<GroupSample> {
  const out: GroupSample = new Map()
  for (const pid of await group()) {
    const s = cpuSeconds(pid)
    if (s !== undefined) out.set(pid, s)
  }
  return out
}

/**
 * Percent of one core the group used between two samples. A pid that appears only in the
 * second sample started in between and counts in full; one that left is lost (rare: pool
 * connections live 30 s idle, longer than any gap between samples within one run).
 */
export function groupCpuPercent (before: GroupSample, after: GroupSample, wallS: number): number | undefined {
  if (after.size === 0 || wallS <= 0) return undefined
  let used = 0
  for (const [pid, a] of after) used += a - (before.get(pid) ?? 0)
  return Math.round((used / wallS) * 100)
}
