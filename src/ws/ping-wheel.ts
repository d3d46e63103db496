/**
 * Keep-alive pings spread evenly over time. uWebSockets.js can ping idle sockets itself
 * (`sendPingsAutomatically`), but it checks timeouts on a 4 s tick, so every socket that
 * connected within the same few seconds — all of them, after a restart or a network blip — is
 * pinged in the same tick, and answering thousands of pongs at once stalled the loop for
 * 100-250 ms and put every hint of that second in the tail (docs/benchmarks.md, bench:ws).
 *
 * Here each socket is put in a random slot of a wheel that turns once per interval, one slot
 * per tick, and is pinged when its slot comes round: once per interval, at a phase of its own,
 * so N sockets cost about N / slots pings per tick whenever they connected. A late tick (a
 * busy loop) catches up on the slots it missed, so no socket goes more than an interval plus
 * the delay without a ping. The interval is short enough that every live peer's pong resets
 * uWS's own timer before it runs out: uWS then pings only peers that stopped answering.
 */
import type { Clock } from '../clock.js'

export interface PingWheel<T> {
  /** Schedules `item` for a ping once per interval from now on, at a random phase. */
  add: (item: T) => void
  remove: (item: T) => void
  start: () => void
  stop: () => void
  readonly size: number
}

export interface PingWheelOptions<T> {
  clock: Clock
  intervalMs: number
  /** Length of one slot; the interval is rounded to a whole number of them (at least one). */
  tickMs?: number
  ping: (item: T) => void
  /** [0, 1); tests pass a seeded one. */
  random?: () => number
}

export function createPingWheel<T> (options: PingWheelOptions<T>): PingWheel<T> {
  const { clock, ping } = options
  const tickMs = options.tickMs ?? 200
  const random = options.random ?? Math.random
  const slots: Array<Set<T>> = Array.from({ length: Math.max(1, Math.round(options.intervalMs / tickMs)) }, () => new Set<T>())
  // Indices are always taken modulo slots.length, so the slot exists.
  const slot = (i: number): Set<T> => slots[i] as Set<T>
  // Which slot each item is in, so remove() does not search the wheel.
  const slotOf = new Map<T, number>()
  let cursor = 0
  let timer: unknown = null
  // When the slot after the cursor is due; ticks are counted from here, not from when the timer fired.
  let nextDueAt = 0

  function turn (): void {
    const now = clock.now()
    let due = 0
    while (nextDueAt <= now && due < slots.length) {
      due++
      nextDueAt += tickMs
    }
    // Behind by more than a whole turn: every slot is due once; start counting afresh.
    if (nextDueAt <= now) nextDueAt = now + tickMs
    for (let i = 0; i < due; i++) {
      cursor = (cursor + 1) % slots.length
      for (const item of slot(cursor)) ping(item)
    }
    timer = clock.setTimeout(turn, Math.max(1, nextDueAt - clock.now()))
  }

  return {
    add (item) {
      if (slotOf.has(item)) return
      // A slot after the cursor: the first ping comes within one interval of joining.
      const index = (cursor + 1 + Math.floor(random() * slots.length)) % slots.length
      slot(index).add(item)
      slotOf.set(item, index)
    },
    remove (item) {
      const index = slotOf.get(item)
      if (index === undefined) return
      slot(index).delete(item)
      slotOf.delete(item)
    },
    start () {
      if (timer !== null) return
      nextDueAt = clock.now() + tickMs
      timer = clock.setTimeout(turn, tickMs)
    },
    stop () {
      if (timer !== null) clock.clearTimeout(timer)
      timer = null
    },
    get size () { return slotOf.size }
  }
}

/**
 * How long uWS waits, after the last data a socket received, before it pings the socket
 * itself (and then closes it after as long again without an answer): uWS's own split of the
 * idle timeout (WebSocketContextData::calculateIdleTimeoutCompnents), e.g. 16 s of 32.
 */
export function uwsPingAfterS (idleTimeoutS: number): number {
  let margin = 4
  while (idleTimeoutS - margin * 2 >= margin * 2 && margin < 16) margin *= 2
  return idleTimeoutS - margin
}

/**
 * How often the wheel pings, for a given WS_IDLE_TIMEOUT_S: often enough that a live peer's
 * pong always resets uWS's timer before it runs out, so uWS's own (bursty) pings never go to
 * a peer that answers. uWS checks timers on a 4 s tick, so its timer can run out up to 4 s
 * early; pinging every (uwsPingAfterS - 4) / 2 s leaves room for two pongs inside it.
 * With the default 32 s: uWS would ping after 16 s; the wheel pings every 6 s.
 */
export function pingIntervalMs (idleTimeoutS: number): number {
  return Math.max(1000, ((uwsPingAfterS(idleTimeoutS) - 4) / 2) * 1000)
}
