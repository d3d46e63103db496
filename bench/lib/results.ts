/**
 * What every family's report has (the command, the machine, the settings, the failures, goals
 * checked against docs/benchmarks.md), what BENCH_STRICT does with the goals, and where the raw
 * numbers go: `bench/results/<family>-<started_at>.json` (gitignored), next to the markdown each
 * family prints.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { MachineInfo } from './machine-info.js'

export interface RunReport {
  /** The command that reproduces the run (bench/lib/settings.ts, commandLine). */
  readonly command: string
  readonly started_at: string
  readonly machine: MachineInfo
  readonly settings: Record<string, unknown>
  /** What could not run or be read; any makes the run exit 1. */
  readonly failures: string[]
}

/** A target from docs/benchmarks.md and what the run measured; `pass` undefined: not measured. */
export interface Goal {
  readonly goal: string
  readonly target: string
  readonly measured: string
  readonly pass: boolean | undefined
}

/** 1 when something failed to run, or (BENCH_STRICT=1) when a goal was missed; else 0. */
export function exitCode (failed: boolean, goals: readonly Goal[], strict: boolean): number {
  if (failed) return 1
  return strict && goals.some((g) => g.pass === false) ? 1 : 0
}

/** Writes `data` as indented JSON and returns the file's path. */
export function writeResults (family: string, startedAt: string, data: unknown): string {
  // bench code runs from dist/bench/lib/; the results live in the source tree's bench/results/.
  const dir = fileURLToPath(new URL('../../../bench/results/', import.meta.url))
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `${family}-${startedAt.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n')
  return file
}
