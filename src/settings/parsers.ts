/**
 * The value parsers both programs' settings use. Each takes the raw environment string and
 * returns the typed value or `{ problem }`: one sentence that completes "config: NAME ...".
 * A problem never quotes a value that may hold a secret (URLs with passwords, keys).
 */
import { ID_RULE, isValidId } from '../ids.js'

export type Parse<T> = (raw: string) => T | Problem
export interface Problem { readonly problem: string }

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export function problem (p: string): Problem { return { problem: p } }
export function isProblem (v: unknown): v is Problem {
  return typeof v === 'object' && v !== null && 'problem' in v && !Array.isArray(v)
}

export function int (min: number, max: number): Parse<number> {
  return (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) return problem(`must be a whole number, got "${raw}"`)
    const n = Number(raw.trim())
    if (!Number.isSafeInteger(n) || n < min || n > max) return problem(`must be between ${min} and ${max}, got ${raw}`)
    return n
  }
}

/** A whole number of mebibytes, returned in bytes. */
export function mebibytes (min: number, max: number): Parse<number> {
  const whole = int(min, max)
  return (raw) => { const n = whole(raw); return typeof n === 'number' ? n * 1024 * 1024 : n }
}

export function bool (raw: string): boolean | Problem {
  const v = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off', ''].includes(v)) return false
  return problem(`must be one of 1/0/true/false/yes/no/on/off, got "${raw}"`)
}

export function identifier (raw: string): string | Problem {
  return isValidId(raw) ? raw : problem(`${ID_RULE}, got "${raw}"`)
}

export function topicPrefix (raw: string): string | Problem {
  // A prefix may have levels ("acme/llm") but never wildcards or empty levels.
  if (raw.length === 0 || raw.length > 128) return problem('must be 1 to 128 characters')
  if (/[+#\u0000]/.test(raw)) return problem(`must not contain MQTT wildcards (+, #) or NUL, got "${raw}"`)
  if (raw.startsWith('/') || raw.endsWith('/') || raw.includes('//') || raw.startsWith('$')) {
    return problem(`must not start with $ or / nor have empty levels, got "${raw}"`)
  }
  return raw
}

/**
 * One broker URL, or several comma-separated (the nodes of one cluster: the link moves to the
 * next when one fails). Each is checked; the value may hold passwords, so a problem never
 * quotes it (it is printed and logged).
 */
/** MQTT_URL's nodes. Split only where a new URL begins: a comma may also sit in a password. */
export function splitMqttUrls (value: string): string[] {
  return value.split(/,(?=\s*(?:mqtt|tcp):\/\/)/).map((p) => p.trim())
}

export function mqttUrl (raw: string): string | Problem {
  const parts = splitMqttUrls(raw)
  for (const [i, part] of parts.entries()) {
    const which = parts.length > 1 ? `entry ${i + 1} ` : ''
    let u: URL
    try { u = new URL(part) } catch { return problem(`${which}is not a URL (mqtt://[user:password@]host:port)`) }
    if (u.protocol !== 'mqtt:' && u.protocol !== 'tcp:') return problem(`${which}must use mqtt:// (got ${u.protocol}//)`)
    if (u.hostname === '') return problem(`${which}has no host`)
  }
  return parts.join(',')
}

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
export function logLevel (raw: string): LogLevel | Problem {
  const v = raw.trim().toLowerCase() as LogLevel
  return LOG_LEVELS.includes(v) ? v : problem(`must be one of ${LOG_LEVELS.join(', ')}, got "${raw}"`)
}

/** One of a fixed list of words, case-insensitive. */
export function oneOf<T extends string> (values: readonly T[]): Parse<T> {
  return (raw) => {
    const v = raw.trim().toLowerCase() as T
    return values.includes(v) ? v : problem(`must be one of ${values.join(', ')}, got "${raw}"`)
  }
}

export function text (raw: string): string | Problem {
  return raw.includes('\u0000') ? problem('must not contain NUL') : raw
}
