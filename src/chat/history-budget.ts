/**
 * The one rule for fitting a chat's history into a budget: keep the newest turns whose cost
 * fits, dropping from the oldest, and never skip a long newer turn to keep older short ones
 * (the kept turns are always a contiguous, newest suffix). The budget may count characters
 * (HISTORY_MAX_CHARS, here), UTF-8 bytes (the fallback of the token trim, here) or tokens
 * (workers/trim-history.worker.ts, on a pool thread); each supplies only its cost.
 */

/** A turn's cost, or false as soon as it is known to exceed `remaining` (a counter may stop early). */
export type TurnCost<T> = (turn: T, remaining: number, index: number) => number | false

/** The newest turns within `budget`, oldest first, and what they cost together. */
export function keepNewestWithin<T> (history: readonly T[], budget: number, cost: TurnCost<T>): { kept: T[], used: number } {
  let used = 0
  let start = history.length
  while (start > 0) {
    const c = cost(history[start - 1] as T, budget - used, start - 1)
    if (c === false || used + c > budget) break
    used += c
    start--
  }
  return { kept: history.slice(start), used }
}

interface Turn { readonly content: string }

/** HISTORY_MAX_CHARS: the newest turns whose text (UTF-16 code units) fits `maxChars`. */
export function trimToChars<T extends Turn> (history: readonly T[], maxChars: number): T[] {
  return keepNewestWithin(history, maxChars, (turn) => turn.content.length).kept
}

/** The newest turns whose UTF-8 size fits `maxBytes`. */
export function trimToBytes<T extends Turn> (history: readonly T[], maxBytes: number): T[] {
  return keepNewestWithin(history, maxBytes, (turn) => Buffer.byteLength(turn.content, 'utf8')).kept
}
