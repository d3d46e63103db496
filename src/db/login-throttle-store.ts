/**
 * The login token buckets in PostgreSQL (migration 0004): one row per key, refilled lazily in
 * the statement that reads or takes from it, so every gateway sees the same count. Each call is
 * one statement; a take also sweeps a few rows whose buckets have long refilled (they answer
 * exactly like missing ones), so the table holds about the keys of the last window.
 */
import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'

export interface LoginThrottleStore {
  /**
   * Takes one token from each key; returns each key's tokens before (refilled to now). A
   * refused attempt gives them back (refund), one key per statement.
   */
  take: (keys: readonly string[], capacity: number, perSecond: number) => Promise<Map<string, number>>
  /** Gives one token back to one key (at most up to `capacity`). */
  refund: (key: string, capacity: number) => Promise<void>
  reset: (key: string) => Promise<void>
}

/** Rows swept per take: more than the keys a take creates, so expiry outpaces creation. */
const SWEEP = 8

export function createLoginThrottleStore (db: Kysely<Database>): LoginThrottleStore {
  return {
    async take (keys, capacity, perSecond) {
      // Rows are locked in key order (sorted here, taken in input order), so two gateways'
      // takes on the same keys wait for each other instead of deadlocking, and a refund touches
      // one row; the sweep skips rows another statement holds. The refill never goes backwards: now() is the
      // transaction's start, which may be a little before another gateway's updated_at.
      const sorted = [...new Set(keys)].sort()
      const rows = await sql<{ key: string, after: number }>`
        WITH swept AS (
          DELETE FROM login_throttle WHERE ctid IN (
            SELECT ctid FROM login_throttle
            WHERE updated_at < now() - make_interval(secs => ${2 * capacity / perSecond}::double precision)
            ORDER BY updated_at LIMIT ${SWEEP} FOR UPDATE SKIP LOCKED
          )
        )
        INSERT INTO login_throttle AS t (key, tokens, updated_at)
        SELECT k, ${capacity}::double precision - 1, now() FROM unnest(${sorted}::text[]) WITH ORDINALITY AS u(k, i) ORDER BY i
        ON CONFLICT (key) DO UPDATE SET
          tokens = LEAST(${capacity}::double precision, t.tokens + GREATEST(0, EXTRACT(EPOCH FROM (now() - t.updated_at))) * ${perSecond}::double precision) - 1,
          updated_at = GREATEST(t.updated_at, now())
        RETURNING key, tokens AS after`.execute(db)
      // RETURNING gives the value after the take: before is one more.
      return new Map(rows.rows.map((r) => [r.key, Number(r.after) + 1]))
    },
    async refund (key, capacity) {
      await sql`UPDATE login_throttle SET tokens = LEAST(${capacity}::double precision, tokens + 1) WHERE key = ${key}`.execute(db)
    },
    async reset (key) {
      await db.deleteFrom('login_throttle').where('key', '=', key).execute()
    }
  }
}
