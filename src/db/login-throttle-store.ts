/**
 * The login token buckets in PostgreSQL (migration 0004): one row per key, refilled lazily in
 * the statement that reads or takes from it, so every gateway sees the same count. Each call is
 * one statement; a take also sweeps a few rows whose buckets have long refilled (they answer
 * exactly like missing ones), so the table holds about the keys of the last window.
 */
import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'

export interface LoginThrottleStore {
  /** Takes one token from each key; returns each key's tokens before the take (refilled to now). */
  take: (keys: readonly string[], capacity: number, perSecond: number) => Promise<Map<string, number>>
  /** Gives one token back to each key (at most up to `capacity`). */
  refund: (keys: readonly string[], capacity: number) => Promise<void>
  reset: (key: string) => Promise<void>
}

/** Rows swept per take: more than the keys a take creates, so expiry outpaces creation. */
const SWEEP = 8

export function createLoginThrottleStore (db: Kysely<Database>): LoginThrottleStore {
  return {
    async take (keys, capacity, perSecond) {
      // The bucket refilled to now, minus one. RETURNING gives the value after the update, so
      // "before" is that plus one. A row older than a full refill is treated as full.
      const rows = await sql<{ key: string, tokens: number }>`
        WITH swept AS (
          DELETE FROM login_throttle WHERE ctid IN (
            SELECT ctid FROM login_throttle
            WHERE updated_at < now() - make_interval(secs => ${2 * capacity / perSecond}::double precision)
            ORDER BY updated_at LIMIT ${SWEEP}
          )
        )
        INSERT INTO login_throttle (key, tokens, updated_at)
        SELECT k, ${capacity}::double precision - 1, now() FROM unnest(${keys}::text[]) AS k
        ON CONFLICT (key) DO UPDATE SET
          tokens = LEAST(${capacity}::double precision, login_throttle.tokens + EXTRACT(EPOCH FROM (now() - login_throttle.updated_at)) * ${perSecond}::double precision) - 1,
          updated_at = now()
        RETURNING key, tokens`.execute(db)
      return new Map(rows.rows.map((r) => [r.key, Number(r.tokens) + 1]))
    },
    async refund (keys, capacity) {
      await sql`UPDATE login_throttle SET tokens = LEAST(${capacity}::double precision, tokens + 1) WHERE key = ANY(${keys}::text[])`.execute(db)
    },
    async reset (key) {
      await db.deleteFrom('login_throttle').where('key', '=', key).execute()
    }
  }
}
