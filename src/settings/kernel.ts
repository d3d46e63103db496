/**
 * How a program's settings are declared and read: one table of settings (environment name,
 * key, default, example, parser, doc) per program, and one loader that turns the environment
 * into a frozen, typed object or one ConfigError line. The gateway (src/config.ts) and the LLM
 * worker (src/llm-worker/config.ts) are both built from it, and the README's tables are
 * generated from the same docs (src/tools/write-settings-tables.ts).
 */
import type { Parse } from './parsers.js'
import { isProblem } from './parsers.js'

/** Marks a setting the program cannot start without. */
export const REQUIRED = Symbol('required')

export interface Setting<C, K extends keyof C = keyof C> {
  readonly env: string
  readonly key: K
  readonly fallback: C[K] | (() => C[K]) | typeof REQUIRED
  readonly example: string
  readonly parse: Parse<C[K]>
  /** Markdown, for the README's table; the first sentence says what it does. */
  readonly doc: string
  /** The default as the table shows it, where the value alone would not say it. */
  readonly defaultDoc?: string
  /** Former names, still read (when the new one is unset) and logged as deprecated. */
  readonly formerly?: readonly string[]
  /** An empty value means "off" (undefined) rather than "use the default". */
  readonly emptyMeansOff?: true
}

/** Thrown by a loader; `message` is the single line printed before exiting with status 78. */
export class ConfigError extends Error {
  readonly variable: string
  /** `exampleVariable`: the name the example shows, when the value came under a former one. */
  constructor (variable: string, problem: string, example: string, exampleVariable = variable) {
    super(`config: ${variable} ${problem} (example: ${exampleVariable}=${example})`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

/** sysexits.h EX_CONFIG: supervisors can tell "fix the config" from "crashed". */
export const EXIT_CONFIG = 78

export type Env = Readonly<Record<string, string | undefined>>

export interface Deprecation {
  readonly name: string
  readonly replacement: string
  /** The new name is set too, so the former one is not read at all. */
  readonly ignored: boolean
}

export interface ConfigDefinition<C> {
  readonly settings: ReadonlyArray<Setting<C>>
  /** The frozen config, or a ConfigError naming the first bad variable. */
  load: (env: Env) => C
  /** Env names that look like ours but are not read: most likely typos. */
  unknownVariables: (env: Env) => string[]
  /** Former names that are set, and what to call them now. */
  deprecatedVariables: (env: Env) => Deprecation[]
}

export interface ConfigShape<C> {
  readonly settings: ReadonlyArray<Setting<C>>
  /** Names of this shape are ours: an unknown one is reported as a likely typo. */
  readonly ours: RegExp
  /** Ours by shape, but read by someone else (tests, the other program). */
  readonly ignore?: (name: string) => boolean
  /** Rules between settings, and derived values; throws ConfigError. */
  readonly check?: (config: C, env: Env) => C
}

const isSet = (value: string | undefined): value is string => value !== undefined && value !== ''

/**
 * The name a setting's value is read from: its own when set (non-empty), else the first
 * former name that is set, else its own (unset or empty: the default).
 */
export function nameInEnv (env: Env, name: string, formerly: readonly string[] = []): string {
  if (isSet(env[name])) return name
  return formerly.find((former) => isSet(env[former])) ?? name
}

export function defineConfig<C> (shape: ConfigShape<C>): ConfigDefinition<C> {
  const { settings } = shape
  const known = new Set<string>(settings.flatMap((s) => [s.env, ...(s.formerly ?? [])]))
  return {
    settings,
    load (env) {
      const out: Record<string, unknown> = {}
      for (const setting of settings) {
        const from = nameInEnv(env, setting.env, setting.formerly)
        const raw = env[from]
        if (raw === '' && setting.emptyMeansOff === true) { out[setting.key as string] = undefined; continue }
        if (raw === undefined || raw === '') {
          if (setting.fallback === REQUIRED) throw new ConfigError(setting.env, 'is required', setting.example)
          out[setting.key as string] = typeof setting.fallback === 'function' ? (setting.fallback as () => unknown)() : setting.fallback
          continue
        }
        const value = setting.parse(raw)
        if (isProblem(value)) throw new ConfigError(from, value.problem, setting.example, setting.env)
        out[setting.key as string] = value
      }
      const config = shape.check === undefined ? out as C : shape.check(out as C, env)
      return Object.freeze(config)
    },
    unknownVariables (env) {
      return Object.keys(env).filter((k) => shape.ours.test(k) && !known.has(k) && shape.ignore?.(k) !== true)
    },
    deprecatedVariables (env) {
      return settings.flatMap((s) => (s.formerly ?? [])
        .filter((name) => env[name] !== undefined)
        .map((name) => ({ name, replacement: s.env, ignored: isSet(env[s.env]) })))
    }
  }
}

/** Keeps each entry's key and value types tied together inside a settings array. */
export function settingOf<C> () {
  return <K extends keyof C>(setting: Setting<C, K>): Setting<C> => setting as unknown as Setting<C>
}
