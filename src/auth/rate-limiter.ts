/**
 * Login throttling (contract, "Precise rules": after LOGIN_MAX_FAILURES failed logins for one
 * username or client address within 60 s -> 429 rate_limited with Retry-After).
 *
 * One token bucket per key (the route uses `user:<name>` and `ip:<addr>`). A failed login
 * takes a token; a bucket with less than one token blocks; tokens flow back continuously at
 * `capacity` per `windowMs`, so a burst of `capacity` failures blocks at once and an empty
 * bucket is full again `windowMs` later.
 *
 * Memory is bounded two ways, with no timer of its own:
 * - an entry whose bucket has refilled is worth nothing (it answers exactly like a missing
 *   one), so it is dropped when it is looked at, and every call also examines the few oldest
 *   entries and drops the refilled ones (amortised expiry);
 * - at most `maxKeys` entries are held; past that the least recently touched one is evicted.
 *
 * Recency lives in a doubly linked list beside the Map rather than in the Map's own insertion
 * order: V8 leaves a hole for every deleted Map entry until the table is rebuilt, and an
 * iterator started at the front walks over all of them, so "delete the first key" in a loop
 * is quadratic (a million distinct keys through a 100,000-key limiter took 88 s that way;
 * with the list it takes about a second).
 */
import type { Clock } from '../clock.js'

export interface RateLimiterOptions {
  /** Failures allowed in a burst before a key is blocked (LOGIN_MAX_FAILURES). */
  capacity: number
  /** The period in which `capacity` failures are allowed; 60 s per the contract. */
  windowMs?: number
  /** Overrides the refill rate derived from capacity / windowMs (tokens per second). */
  refillPerSecond?: number
  /** Upper bound on the entries held. */
  maxKeys?: number
  clock: Pick<Clock, 'now'>
}

export type RateDecision = { allowed: true } | { allowed: false, retryAfterS: number }

export interface RateLimiter {
  /** Whether `key` may try again now. Never consumes a token and never creates an entry. */
  check (key: string): RateDecision
  /** Records one failed attempt for `key`: takes one token. */
  fail (key: string): void
  /** Forgets `key`, e.g. a username after a successful login. */
  reset (key: string): void
  /** Gives back the token one fail() took (an attempt counted up front that succeeded). */
  refund (key: string): void
  /** Entries currently held (never more than maxKeys). */
  readonly size: number
}

export const DEFAULT_WINDOW_MS = 60_000
export const DEFAULT_MAX_KEYS = 100_000
/**
 * Oldest entries examined per call. More than one, so expiry outpaces creation (a call
 * creates at most one entry): a steady stream of distinct keys keeps the map near the
 * number of keys seen in the last window instead of drifting up to maxKeys.
 */
const SWEEP_PER_CALL = 4

interface Bucket {
  readonly key: string
  tokens: number
  /** Clock time (ms) at which `tokens` was computed. */
  at: number
  /** Towards the least recently touched end. */
  older: Bucket | null
  /** Towards the most recently touched end. */
  newer: Bucket | null
}

export function createRateLimiter (options: RateLimiterOptions): RateLimiter {
  const { capacity, clock } = options
  const windowMs = options.windowMs ?? DEFAULT_WINDOW_MS
  const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be an integer >= 1, got ${capacity}`)
  if (!(windowMs > 0)) throw new RangeError(`windowMs must be > 0, got ${windowMs}`)
  if (!Number.isInteger(maxKeys) || maxKeys < 1) throw new RangeError(`maxKeys must be an integer >= 1, got ${maxKeys}`)
  const refillPerMs = options.refillPerSecond !== undefined ? options.refillPerSecond / 1000 : capacity / windowMs
  if (!(refillPerMs > 0)) throw new RangeError(`refillPerSecond must be > 0, got ${options.refillPerSecond}`)

  const buckets = new Map<string, Bucket>()
  let oldest: Bucket | null = null
  let newest: Bucket | null = null

  function unlink (bucket: Bucket): void {
    if (bucket.older === null) oldest = bucket.newer
    else bucket.older.newer = bucket.newer
    if (bucket.newer === null) newest = bucket.older
    else bucket.newer.older = bucket.older
    bucket.older = null
    bucket.newer = null
  }

  function linkNewest (bucket: Bucket): void {
    bucket.older = newest
    bucket.newer = null
    if (newest === null) oldest = bucket
    else newest.newer = bucket
    newest = bucket
  }

  function drop (bucket: Bucket): void {
    unlink(bucket)
    buckets.delete(bucket.key)
  }

  /** Tokens the bucket holds at `now`; a clock that steps back refills nothing. */
  function tokensAt (bucket: Bucket, now: number): number {
    const elapsed = Math.max(0, now - bucket.at)
    return Math.min(capacity, bucket.tokens + elapsed * refillPerMs)
  }

  /** Drops refilled buckets among the oldest few, so idle keys go without a timer. */
  function sweep (now: number): void {
    let bucket = oldest
    for (let examined = 0; bucket !== null && examined < SWEEP_PER_CALL; examined++) {
      const next: Bucket | null = bucket.newer
      if (tokensAt(bucket, now) >= capacity) drop(bucket)
      bucket = next
    }
  }

  /** Brings the bucket's tokens up to `now` and moves it to the most recently touched end. */
  function touch (bucket: Bucket, tokens: number, now: number): void {
    bucket.tokens = tokens
    bucket.at = now
    unlink(bucket)
    linkNewest(bucket)
  }

  return {
    check (key) {
      const now = clock.now()
      sweep(now)
      const bucket = buckets.get(key)
      if (bucket === undefined) return { allowed: true }
      const tokens = tokensAt(bucket, now)
      if (tokens >= capacity) {
        drop(bucket)
        return { allowed: true }
      }
      // Looking counts as a touch: a key being hammered is the last one to evict.
      touch(bucket, tokens, now)
      if (tokens >= 1) return { allowed: true }
      // Seconds until one whole token is back, rounded up (Retry-After is whole seconds,
      // RFC 9110 10.2.3) and never 0, which a client would read as "retry at once".
      const retryAfterS = Math.max(1, Math.ceil((1 - tokens) / refillPerMs / 1000))
      return { allowed: false, retryAfterS }
    },

    fail (key) {
      const now = clock.now()
      sweep(now)
      const bucket = buckets.get(key)
      if (bucket !== undefined) {
        touch(bucket, Math.max(0, tokensAt(bucket, now) - 1), now)
        return
      }
      if (buckets.size >= maxKeys && oldest !== null) {
        // Full of live entries: give up the least recently touched one. This lets someone
        // who can fail maxKeys distinct keys inside one window free a blocked key early;
        // the per-address key (and maxKeys sized well above real traffic) is the answer.
        drop(oldest)
      }
      const fresh: Bucket = { key, tokens: capacity - 1, at: now, older: null, newer: null }
      buckets.set(key, fresh)
      linkNewest(fresh)
    },

    reset (key) {
      sweep(clock.now())
      const bucket = buckets.get(key)
      if (bucket !== undefined) drop(bucket)
    },

    refund (key) {
      const now = clock.now()
      const bucket = buckets.get(key)
      if (bucket === undefined) return
      const tokens = tokensAt(bucket, now) + 1
      // A full bucket carries no information: drop it, as expiry would.
      if (tokens >= capacity) drop(bucket)
      else touch(bucket, tokens, now)
    },

    get size () { return buckets.size }
  }
}
