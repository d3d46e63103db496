/**
 * Body validation shared by the JSON routes. Types are strict (a number is not a string);
 * text must be valid UTF-8 with no NUL and no lone surrogates (contract: Precise rules).
 * Failures carry a message that names the field, for the 400 body.
 */
import { isUtf8 } from 'node:buffer'
import { idRule, isValidId } from '../ids.js'
import { MAX_JSON_DEPTH, parsePeerJson } from '../peer-json.js'

// A high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

export type Parsed<T> = { ok: true, value: T } | { ok: false, message: string }

export function parseJsonObject (body: Buffer): Parsed<Record<string, unknown>> {
  if (!isUtf8(body)) return { ok: false, message: 'The body is not valid UTF-8.' }
  const json = parsePeerJson(body.toString('utf8'))
  if (!json.ok) {
    return { ok: false, message: json.reason === 'too_deep' ? `The body nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels.` : 'The body is not valid JSON.' }
  }
  const value = json.value
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, message: 'The body must be a JSON object.' }
  }
  return { ok: true, value: value as Record<string, unknown> }
}

export function checkText (name: string, value: unknown, options: { min?: number, max?: number } = {}): Parsed<string> {
  if (typeof value !== 'string') return { ok: false, message: `${name} must be a string.` }
  const min = options.min ?? 1
  if (value.length < min) return { ok: false, message: `${name} must not be empty.` }
  if (options.max !== undefined && value.length > options.max) return { ok: false, message: `${name} must be at most ${options.max} characters.` }
  if (value.includes('\u0000')) return { ok: false, message: `${name} must not contain NUL characters.` }
  if (LONE_SURROGATE.test(value)) return { ok: false, message: `${name} must not contain lone surrogates.` }
  return { ok: true, value }
}

export function checkId (name: string, value: unknown): Parsed<string> {
  if (typeof value !== 'string') return { ok: false, message: `${name} must be a string.` }
  if (!isValidId(value)) return { ok: false, message: `${idRule(name)}.` }
  return { ok: true, value }
}
