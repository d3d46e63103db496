/**
 * Time as a dependency. Production uses the real clock; tests pass XState's SimulatedClock
 * (which has the same shape), so timers in the machines and in src/ advance together.
 */
export interface Clock {
  // Method syntax on purpose: it lets SimulatedClock (clearTimeout(id: number)) stand in.
  now (): number
  setTimeout (fn: () => void, ms: number): unknown
  clearTimeout (handle: unknown): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => { clearTimeout(handle as NodeJS.Timeout) }
}
