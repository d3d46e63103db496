/**
 * CPU time of our child processes from /proc (Linux), so a report on a 2-core box shows who
 * used the cores: gateway, broker, worker, PostgreSQL or the load generator. Elsewhere it
 * reports nothing.
 */
import { readFileSync } from 'node:fs'

/** USER_HZ; 100 on every Linux we run on (sysconf(_SC_CLK_TCK)). */
const TICKS_PER_S = 100

/**
 * The fields of /proc/<pid>/stat after the ")" that closes the command name (which may hold
 * spaces): [0] is state (field 3 in proc(5)), [9] majflt (12), [11] utime (14), [12] stime (15).
 * Undefined where /proc is unavailable or the process is gone.
 */
export function procStat (pid: number | undefined): string[] | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** utime + stime of `pid` in seconds, or undefined if /proc is unavailable. */
export function cpuSeconds (pid: number | undefined): number | undefined {
  const rest = procStat(pid)
  return rest === undefined ? undefined : (Number(rest[11]) + Number(rest[12])) / TICKS_PER_S
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
 * Percent of one core the group used between two samples; undefined when no pid counted. A pid
 * that appears only in the second sample started in between: with `newPids` 'count' (bench:chat)
 * it counts in full, with 'skip' (bench:loop) it is left out. One that left is lost (rare: pool
 * connections live 30 s idle, longer than any gap between samples within one run).
 */
export function groupCpuPercent (before: GroupSample, after: GroupSample, wallS: number, newPids: 'count' | 'skip' = 'count'): number | undefined {
  if (wallS <= 0) return undefined
  let used = 0
  let counted = 0
  for (const [pid, a] of after) {
    const b = before.get(pid)
    if (b === undefined && newPids === 'skip') continue
    used += a - (b ?? 0)
    counted++
  }
  return counted === 0 ? undefined : Math.round((used / wallS) * 100)
}
