/**
 * The newest turns of sessions this gateway has written to, each with the session version it
 * matches (migration 0003: every insert into a session's messages bumps its version, whoever
 * inserts). chat-writes.ts sends the cached version with a user turn; the batch statement skips
 * the history read when the session is still at that version, and the turns here are then
 * exactly what the read would have returned. Bounded in bytes, least recently used first out.
 */
import type { HistoryTurn } from '../mqtt/protocol.js'

export interface CachedHistory {
  readonly turns: readonly HistoryTurn[]
  /** The session's version these turns are the newest turns of (a bigint, as PostgreSQL sends it). */
  readonly version: string
}

export interface HistoryCache {
  /** The entry, marked as the most recently used. */
  get: (sessionId: string) => CachedHistory | undefined
  set: (sessionId: string, entry: CachedHistory) => void
  delete: (sessionId: string) => void
  readonly bytes: number
  readonly size: number
}

/** What an entry costs: its text as V8 holds it (two bytes a character, at most) and some overhead. */
function sizeOf (entry: CachedHistory): number {
  let n = 96
  for (const t of entry.turns) n += 48 + 2 * t.content.length
  return n
}

export function createHistoryCache (maxBytes: number): HistoryCache {
  const entries = new Map<string, { entry: CachedHistory, bytes: number }>()
  let bytes = 0

  function remove (sessionId: string): void {
    const held = entries.get(sessionId)
    if (held === undefined) return
    entries.delete(sessionId)
    bytes -= held.bytes
  }

  return {
    get (sessionId) {
      const held = entries.get(sessionId)
      if (held === undefined) return undefined
      entries.delete(sessionId)
      entries.set(sessionId, held)
      return held.entry
    },
    set (sessionId, entry) {
      remove(sessionId)
      const size = sizeOf(entry)
      if (size > maxBytes) return
      entries.set(sessionId, { entry, bytes: size })
      bytes += size
      for (const oldest of entries.keys()) {
        if (bytes <= maxBytes) break
        remove(oldest)
      }
    },
    delete: remove,
    get bytes () { return bytes },
    get size () { return entries.size }
  }
}
