/**
 * A bench's settings come from BENCH_* variables (and a few of the gateway's own names, such as
 * ECHO_CHUNKS). Every family reads them through one reader so that a bad value is always one
 * clear line and exit 78, never a stack trace, and the settings every family shares (database,
 * readiness, watchdog, broker binary, strictness) have one owner.
 */
import { redact } from './database.js'

/** Trust auth on loopback in the dev container; BENCH_DATABASE_URL points elsewhere. */
export const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test'

export interface EnvReader {
  /** Prints `<tag>: <line>` and exits 78 (EX_CONFIG). */
  fail: (line: string) => never
  /** A number in min..max; unset or empty gives `fallback`. */
  number: (name: string, fallback: number, min: number, max: number) => number
  /** A whole number in min..max; unset or empty gives `fallback`. */
  int: (name: string, fallback: number, min: number, max: number) => number
  /** Unset or empty: undefined (the gateway's default); else as `number` or `int`. */
  optional: (name: string, min: number, max: number, whole: boolean) => number | undefined
  /** A comma list of whole numbers in min..max (at most `maxCount` of them). */
  ints: (name: string, fallback: string, o: { min: number, max: number, maxCount?: number, unit?: string }) => number[]
  /** A comma list of names out of `allowed`, in order; an alias stands for several names. */
  choices: <T extends string>(name: string, fallback: string, allowed: readonly T[], o?: { aliases?: Record<string, readonly T[]>, nonEmpty?: boolean }) => T[]
  /** Space-separated words, e.g. extra node flags. */
  words: (name: string) => string[]
}

export function envReader (tag: string, env: NodeJS.ProcessEnv = process.env): EnvReader {
  const fail = (line: string): never => {
    console.error(`${tag}: ${line}`)
    process.exit(78)
  }
  const read = (name: string, fallback: number, min: number, max: number, whole: boolean): number => {
    const raw = env[name]
    if (raw === undefined || raw === '') return fallback
    const n = Number(raw)
    if (!Number.isFinite(n) || n < min || n > max || (whole && !Number.isInteger(n))) {
      fail(`${name} must be a ${whole ? 'whole ' : ''}number between ${min} and ${max}, got "${raw}"`)
    }
    return n
  }
  return {
    fail,
    number: (name, fallback, min, max) => read(name, fallback, min, max, false),
    int: (name, fallback, min, max) => read(name, fallback, min, max, true),
    optional: (name, min, max, whole) => env[name] === undefined || env[name] === '' ? undefined : read(name, min, min, max, whole),
    ints (name, fallback, o) {
      const raw = env[name] ?? fallback
      const list = raw.split(',').map((s) => Number(s.trim()))
      if ((o.maxCount !== undefined && list.length > o.maxCount) || list.some((x) => !Number.isInteger(x) || x < o.min || x > o.max)) {
        fail(`${name} must be a comma list of ${o.maxCount === undefined ? '' : `at most ${o.maxCount} `}whole numbers ${o.min}..${o.max}${o.unit === undefined ? '' : ` (${o.unit})`}, got "${raw}"`)
      }
      return list
    },
    choices (name, fallback, allowed, o = {}) {
      const aliases = o.aliases ?? {}
      const out: Array<(typeof allowed)[number]> = []
      for (const p of (env[name] ?? fallback).split(',').map((s) => s.trim()).filter((s) => s !== '')) {
        const alias = aliases[p]
        if (alias !== undefined) { out.push(...alias); continue }
        if (!(allowed as readonly string[]).includes(p)) {
          const also = Object.entries(aliases).map(([k, v]) => ` (or ${k} = ${v.join(',')})`).join('')
          fail(`${name} takes ${allowed.join(', ')}${also}; got "${p}"`)
        }
        out.push(p as (typeof allowed)[number])
      }
      if (o.nonEmpty === true && out.length === 0) fail(`${name} takes ${allowed.join(', ')}; got none`)
      return out
    },
    words: (name) => (env[name] ?? '').split(' ').filter((a) => a !== '')
  }
}

/** The settings every family has, with each family's own watchdog bounds. */
export interface CommonSettings {
  /** Server and admin login the run's own database is created with (BENCH_DATABASE_URL). */
  readonly adminDatabaseUrl: string
  /** How long a gateway may take to answer GET /readyz 200 (BENCH_READY_TIMEOUT_S). */
  readonly readyTimeoutMs: number
  /** Whole-run watchdog (BENCH_MAX_SECONDS). */
  readonly maxSeconds: number
  readonly mosquittoBin: string
  /** BENCH_STRICT=1: exit 1 when a goal is missed. */
  readonly strict: boolean
}

export function readCommonSettings (r: EnvReader, maxSeconds: { fallback: number, min: number }, env: NodeJS.ProcessEnv = process.env): CommonSettings {
  const adminDatabaseUrl = env.BENCH_DATABASE_URL ?? DEFAULT_ADMIN_URL
  if (!/^postgres(ql)?:\/\//.test(adminDatabaseUrl)) r.fail('BENCH_DATABASE_URL must be a postgres:// URL of a server where the login may CREATE DATABASE')
  return {
    adminDatabaseUrl,
    readyTimeoutMs: r.number('BENCH_READY_TIMEOUT_S', 60, 1, 600) * 1000,
    maxSeconds: r.number('BENCH_MAX_SECONDS', maxSeconds.fallback, maxSeconds.min, 3600),
    mosquittoBin: env.MOSQUITTO_BIN ?? 'mosquitto',
    strict: env.BENCH_STRICT === '1'
  }
}

/**
 * The command that reproduces this run, for the report: every BENCH_* variable set (the
 * database URL without its password) plus the `extra` names the family reads, then the script.
 */
export function commandLine (script: string, extra: readonly string[], env: NodeJS.ProcessEnv = process.env): string {
  const vars = Object.keys(env).filter((k) => k.startsWith('BENCH_') || extra.includes(k)).sort()
    .map((k) => `${k}=${k === 'BENCH_DATABASE_URL' ? redact(env[k] ?? '') : env[k] ?? ''}`)
  return [...vars, `npm run ${script}`].join(' ')
}
