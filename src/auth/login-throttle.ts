/**
 * The login limits (contract: LOGIN_MAX_FAILURES failed logins per username and per client
 * address within 60 s -> 429 rate_limited) held for the whole cluster: the buckets live in
 * PostgreSQL (src/db/login-throttle-store.ts), so failures spread over N gateways trip the
 * limit at the same count as on one. Each gateway's in-memory limiter stands in front: it turns
 * a flood away without a database round trip, and it is the limit while the database is down
 * (a login needs the database anyway, so that is a short and rare window).
 */
import type { Logger } from '../log.js'
import type { LoginThrottleStore } from '../db/login-throttle-store.js'
import type { RateLimiter } from './rate-limiter.js'

/** A refusal names the key that ran out (for the log: a username or an address). */
export type ThrottleDecision = { allowed: true } | { allowed: false, retryAfterS: number, key: string }

export interface LoginThrottle {
  /** Counts an attempt for every key up front; refused (and nothing counted) when any key has no token left. */
  take: (keys: readonly string[]) => Promise<ThrottleDecision>
  /** Gives back what take() counted (the login succeeded, or could not be checked). */
  refund: (keys: readonly string[]) => void
  /** Forgets a key (a username after a successful login). */
  reset: (key: string) => void
}

export interface LoginThrottleOptions {
  local: RateLimiter
  /** The shared buckets, or null while the database cannot be used. */
  store: () => LoginThrottleStore | null
  capacity: number
  windowMs: number
  log: Logger
}

export function createLoginThrottle (o: LoginThrottleOptions): LoginThrottle {
  const perSecond = o.capacity / (o.windowMs / 1000)
  // Refunds and resets are not waited for by the login that makes them, but the next take of
  // the same key waits for them: a failure right after a successful login must find the
  // username's count already cleared (on a busy pool the reset could otherwise commit after it).
  const inFlight = new Map<string, Promise<void>>()
  const background = (what: string, key: string, p: Promise<unknown>): void => {
    const settled = p.then(() => {}, (err: unknown) => { o.log.debug({ err: err instanceof Error ? err.message : String(err) }, `login throttle: ${what} not stored`) })
    const chained = (inFlight.get(key) ?? Promise.resolve()).then(async () => { await settled })
    inFlight.set(key, chained)
    void chained.then(() => { if (inFlight.get(key) === chained) inFlight.delete(key) })
  }
  return {
    async take (keys) {
      for (const key of keys) {
        const verdict = o.local.check(key)
        if (!verdict.allowed) return { ...verdict, key }
      }
      for (const key of keys) o.local.fail(key)
      const store = o.store()
      if (store === null) return { allowed: true }
      const earlier = keys.map((key) => inFlight.get(key)).filter((p) => p !== undefined)
      if (earlier.length > 0) await Promise.all(earlier)
      let before: Map<string, number>
      try {
        before = await store.take(keys, o.capacity, perSecond)
      } catch (err) {
        // The login will find the database down too; this gateway's own count still holds.
        o.log.debug({ err: err instanceof Error ? err.message : String(err) }, 'login throttle: shared count unavailable; local only')
        return { allowed: true }
      }
      let short = 0
      let shortKey = keys[0] as string
      for (const key of keys) {
        const missing = 1 - (before.get(key) ?? o.capacity)
        if (missing > short) { short = missing; shortKey = key }
      }
      if (short <= 0) return { allowed: true }
      // Refused: the shared count gets its tokens back; this gateway's own count keeps them, so
      // that a flood past the cluster's limit is turned away here without asking the database.
      for (const key of keys) background('refund', key, store.refund(key, o.capacity))
      return { allowed: false, retryAfterS: Math.max(1, Math.ceil(short / perSecond)), key: shortKey }
    },
    refund (keys) {
      for (const key of keys) o.local.refund(key)
      const store = o.store()
      if (store !== null) for (const key of keys) background('refund', key, store.refund(key, o.capacity))
    },
    reset (key) {
      o.local.reset(key)
      const store = o.store()
      if (store !== null) background('reset', key, store.reset(key))
    }
  }
}
