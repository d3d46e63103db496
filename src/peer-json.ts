/**
 * JSON from peers (request bodies, WebSocket frames, MQTT payloads), parsed so that nothing
 * done with the result later can throw. V8's JSON.parse is iterative and takes any depth,
 * but JSON.stringify, structured clone and pino's serialiser recurse: a 10 KB frame of 5,000
 * nested arrays parsed fine and then threw "Maximum call stack size exceeded" out of a uWS
 * handler, which ended the process. So depth is bounded before parsing, by a linear scan that
 * allocates nothing.
 */

/**
 * Deepest nesting of arrays and objects accepted from a peer. Real payloads (chat frames,
 * hints, replies) are a handful of levels deep; JSON.stringify overflows in the thousands.
 */
export const MAX_JSON_DEPTH = 64

export type PeerJson =
  | { ok: true, value: unknown }
  | { ok: false, reason: 'malformed' | 'too_deep' }

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

/**
 * Whether `text` nests arrays/objects deeper than `maxDepth`, ignoring brackets inside
 * strings. Exact for valid JSON; for invalid JSON it may answer either way, which is fine:
 * JSON.parse refuses that text anyway.
 */
export function nestsDeeperThan (text: string, maxDepth: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) inString = false
    } else if (c === QUOTE) {
      inString = true
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > maxDepth) return true
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) {
      depth--
    }
  }
  return false
}

/** Parses peer JSON with bounded nesting; never throws. */
export function parsePeerJson (text: string, maxDepth = MAX_JSON_DEPTH): PeerJson {
  if (nestsDeeperThan(text, maxDepth)) return { ok: false, reason: 'too_deep' }
  try {
    return { ok: true, value: JSON.parse(text) }
  } catch {
    return { ok: false, reason: 'malformed' }
  }
}

/** A plain JSON object (not an array, not null), or null. */
export function asObject (value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null
}
