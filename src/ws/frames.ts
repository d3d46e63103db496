/**
 * Client frames on both sockets: text JSON objects with a `type`. Binary frames, bad JSON and
 * unknown types are rejected here with the reason the metrics count; a socket that keeps
 * sending rejected frames is closed (see `createStrikes`).
 */
import { MAX_JSON_DEPTH, parsePeerJson } from '../peer-json.js'

export type FrameReason = 'binary' | 'too_big' | 'malformed' | 'too_deep' | 'unknown_type' | 'invalid' | 'rate_limited' | 'link_down'

export type Parsed = { ok: true, frame: Record<string, unknown> & { type: string } } | { ok: false, reason: FrameReason, message: string }

const UTF8 = new TextDecoder('utf-8', { fatal: true })

export function parseFrame (message: ArrayBuffer, isBinary: boolean, types: readonly string[]): Parsed {
  if (isBinary) return { ok: false, reason: 'binary', message: 'Binary frames are not supported; send JSON text.' }
  let text: string
  try {
    // TextDecoder with fatal: invalid UTF-8 is rejected rather than replaced.
    text = UTF8.decode(message)
  } catch {
    return { ok: false, reason: 'malformed', message: 'The frame is not valid UTF-8 JSON.' }
  }
  const json = parsePeerJson(text)
  if (!json.ok) {
    return json.reason === 'too_deep'
      ? { ok: false, reason: 'too_deep', message: `The frame nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels.` }
      : { ok: false, reason: 'malformed', message: 'The frame is not valid UTF-8 JSON.' }
  }
  const value = json.value
  if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as { type?: unknown }).type !== 'string') {
    return { ok: false, reason: 'malformed', message: 'A frame must be a JSON object with a "type".' }
  }
  const frame = value as Record<string, unknown> & { type: string }
  if (!types.includes(frame.type)) return { ok: false, reason: 'unknown_type', message: `Unknown frame type "${frame.type.slice(0, 32)}"; expected ${types.join(' or ')}.` }
  return { ok: true, frame }
}

/** Per-socket token bucket for frames (state messages): `burst` at once, `perSecond` sustained. */
export interface Bucket { tokens: number, at: number }

export function takeToken (bucket: Bucket, now: number, perSecond: number, burst: number): boolean {
  // A wall clock that steps back must not drain the bucket (a negative refill).
  bucket.tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * perSecond)
  bucket.at = now
  if (bucket.tokens < 1) return false
  bucket.tokens -= 1
  return true
}

/** Rejected frames in a row before the socket is closed with policy_violation (4500). */
export const MAX_STRIKES = 50
