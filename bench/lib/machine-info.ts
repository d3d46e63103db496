/**
 * The machine a run measured on, for every report: cores, memory, versions, the descriptor
 * limit, the commit (and whether the gateway had uncommitted changes), and the load average,
 * which tells whether someone else shared the cores.
 */
import { spawnSync } from 'node:child_process'
import os from 'node:os'

export interface MachineInfo {
  readonly cpus: number
  readonly cpu_model: string
  readonly total_mem_mb: number
  readonly os: string
  readonly node: string
  readonly mosquitto: string
  readonly ulimit_nofile: number | undefined
  readonly git_commit: string | undefined
  /** Uncommitted changes under src/, machines/ or workers/: the build measured is not exactly git_commit. */
  readonly git_dirty: boolean | undefined
  /** 1-minute load average when the run started: well above 0 means someone else shared the cores. */
  readonly loadavg_1m_at_start: number
}

/** The 1-minute load average, to two decimals. */
export function loadAverage1m (): number {
  return Math.round((os.loadavg()[0] ?? 0) * 100) / 100
}

export function machineInfo (mosquitto: string): MachineInfo {
  const cpus = os.cpus()
  const sh = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8', timeout: 2000 })
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', timeout: 2000 })
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src', 'machines', 'workers'], { encoding: 'utf8', timeout: 5000 })
  const nofile = Number(sh.stdout?.trim())
  return {
    cpus: cpus.length,
    cpu_model: cpus[0]?.model ?? 'unknown',
    total_mem_mb: Math.round(os.totalmem() / 2 ** 20),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    mosquitto,
    ulimit_nofile: Number.isFinite(nofile) ? nofile : undefined,
    git_commit: git.status === 0 ? git.stdout.trim() : undefined,
    git_dirty: dirty.status === 0 ? dirty.stdout.trim() !== '' : undefined,
    loadavg_1m_at_start: loadAverage1m()
  }
}
