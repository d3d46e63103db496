/**
 * A fixed number of slots with a bounded waiting line in front of them. Work beyond both is
 * refused at once: a worker that queues without bound only moves the timeout somewhere the
 * user cannot see it, since every request carries a deadline.
 */

export type Admission = 'started' | 'queued' | 'full'

export interface Slots<T> {
  /** Starts `item` if a slot is free, else queues it; `full` when the waiting line is full too. */
  offer: (item: T) => Admission
  /** Takes a waiting item out of the line; false if it was not waiting (running or unknown). */
  withdraw: (item: T) => boolean
  readonly active: number
  readonly waiting: number
  /** The waiting items, oldest first. */
  waitingItems: () => T[]
}

export interface SlotsOptions<T> {
  concurrency: number
  queue: number
  /** Must not reject; when its promise settles the slot goes to the oldest waiting item. */
  run: (item: T) => Promise<void>
}

export function createSlots<T> ({ concurrency, queue, run }: SlotsOptions<T>): Slots<T> {
  let active = 0
  // A Set keeps insertion order (the line) and withdraws in O(1).
  const line = new Set<T>()

  function start (item: T): void {
    active++
    run(item).then(release, release)
  }

  function release (): void {
    active--
    const next = line.values().next()
    if (next.done === true) return
    line.delete(next.value)
    start(next.value)
  }

  return {
    offer (item) {
      if (active < concurrency) { start(item); return 'started' }
      if (line.size < queue) { line.add(item); return 'queued' }
      return 'full'
    },
    withdraw: (item) => line.delete(item),
    get active () { return active },
    get waiting () { return line.size },
    waitingItems: () => [...line]
  }
}
