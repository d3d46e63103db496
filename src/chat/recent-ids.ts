/**
 * A bounded memory of recently settled request ids, so that a late `done` can be told apart
 * from a reply nobody asked for (both are dropped; they are counted separately). Oldest ids
 * fall out first; memory is fixed by `capacity`.
 */
export interface RecentIds {
  add: (id: string) => void
  has: (id: string) => boolean
  readonly size: number
}

export function createRecentIds (capacity: number): RecentIds {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a whole number >= 1, got ${capacity}`)
  const ring: (string | undefined)[] = new Array(capacity)
  const present = new Set<string>()
  let next = 0
  return {
    add (id) {
      if (present.has(id)) return
      const evicted = ring[next]
      if (evicted !== undefined) present.delete(evicted)
      ring[next] = id
      next = (next + 1) % capacity
      present.add(id)
    },
    has: (id) => present.has(id),
    get size () { return present.size }
  }
}
