/**
 * Which user owns which chat session, remembered in memory (bounded, least recently used
 * first out), so a hints socket for a session already seen is upgraded synchronously, inside
 * uWebSockets.js's upgrade callback, instead of after a database round trip.
 *
 * That is not only the round trip saved: an upgrade after an await is where this uWS build
 * goes wrong (upgrade.ts). A session's owner never changes (sessions are not moved or
 * deleted), so an entry can never go stale; a session not (or no longer) remembered is looked
 * up in the database as before.
 */
export interface SessionOwners {
  remember: (sessionId: string, userId: string) => void
  /** true: `userId` owns it; false: someone else does; undefined: not remembered. */
  owns: (userId: string, sessionId: string) => boolean | undefined
  readonly size: number
}

/** About 150 B an entry (two UUID strings and a Map slot): some 7 MB when full. */
export const DEFAULT_SESSION_OWNERS_CAPACITY = 50_000

export function createSessionOwners (capacity = DEFAULT_SESSION_OWNERS_CAPACITY): SessionOwners {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be an integer >= 1, got ${capacity}`)
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  const owners = new Map<string, string>()
  return {
    remember (sessionId, userId) {
      owners.delete(sessionId)
      owners.set(sessionId, userId)
      if (owners.size > capacity) {
        const oldest = owners.keys().next().value
        if (oldest !== undefined) owners.delete(oldest)
      }
    },
    owns (userId, sessionId) {
      const owner = owners.get(sessionId)
      if (owner === undefined) return undefined
      owners.delete(sessionId)
      owners.set(sessionId, owner)
      return owner === userId
    },
    get size () { return owners.size }
  }
}
