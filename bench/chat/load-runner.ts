/**
 * Runs one load command in a fresh load-client child and collects its result plus the CPU use
 * of every process involved over the same interval.
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { forkNode, nextMessage, stop, within, type Started } from '../lib/proc.js'
import { sampleCpu, cpuPercent, sampleGroup, groupCpuPercent, type ProcessGroup, type GroupSample } from '../lib/cpu.js'
import { isType } from '../lib/ipc.js'
import type { LoadResult } from '../lib/stats.js'
import type { LoadCommand } from '../load-client.js'

export const LOAD_CLIENT_JS = fileURLToPath(new URL('../load-client.js', import.meta.url))

export interface RunResult extends LoadResult {
  /** Percent of one core per process over the whole run (warm-up included). */
  readonly cpu_percent: Record<string, number>
}

interface ResultMsg { type: 'result', result: LoadResult, cpu_percent: number }
interface ErrorMsg { type: 'error', message: string }

/**
 * `pids`: single processes by role (gateway, broker, worker); `groups`: process sets listed at
 * both ends of the run (postgres: the backends of the bench database).
 */
export async function runLoad (cmd: LoadCommand, logDir: string, pids: Record<string, number | undefined>, groups: Record<string, ProcessGroup> = {}): Promise<RunResult> {
  const groupsBefore = new Map<string, GroupSample>()
  for (const [name, g] of Object.entries(groups)) groupsBefore.set(name, await sampleGroup(g).catch(() => new Map()))
  const lc = forkNode(LOAD_CLIENT_JS, [], join(logDir, `load-${cmd.cmd}.log`))
  const before = sampleCpu(pids)
  const t0 = Date.now()
  lc.child.send(cmd)
  try {
    const msg = await nextMessage(lc.child, (m): m is ResultMsg | ErrorMsg => isType(m, 'result') || isType(m, 'error'), cmd.maxLifeMs + 5000, `load client (${cmd.cmd})`)
    if (msg.type === 'error') throw new Error(`load client (${cmd.cmd}): ${msg.message}`)
    const wallS = (Date.now() - t0) / 1000
    const cpu = cpuPercent(before, sampleCpu(pids), wallS)
    for (const [name, g] of Object.entries(groups)) {
      const after = await sampleGroup(g).catch(() => new Map<number, number>())
      const p = groupCpuPercent(groupsBefore.get(name) ?? new Map(), after, wallS)
      if (p !== undefined) cpu[name] = p
    }
    cpu.loadgen = msg.cpu_percent
    if (cmd.cmd === 'pg' && lc.child.exitCode === null) {
      lc.child.send({ cmd: 'close' })
      await within(new Promise((resolve) => lc.child.once('exit', resolve)), 3000)
    }
    return { ...msg.result, cpu_percent: cpu }
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${lc.tail(10)}`)
  } finally {
    await stop(lc.child, 2000)
  }
}

/** Starts a hold (heap phase) load client; the caller drives it with IPC messages. */
export function startHoldClient (logDir: string): Started {
  return forkNode(LOAD_CLIENT_JS, [], join(logDir, 'load-hold.log'))
}

