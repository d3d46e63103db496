/**
 * Writes whose outcome is unknown. When the connection dies after a batch was sent (the server
 * killed, a client-side read timeout), the statement may have committed though its callers were
 * answered 503 db_unavailable; a chat answered 503 must not show up later in its history as a
 * completed exchange. The rows' ids are made in the gateway, so they are kept here and deleted
 * once the database answers again: before the next batch, and on a timer when no batch comes.
 * Bounded: past `max` ids the oldest are given up (and counted).
 */
import { CompiledQuery, type Kysely } from 'kysely'
import type { Database } from './schema.js'

export interface UnsureWrites {
  /** The ids of a batch whose commit is unknown. */
  add: (ids: readonly string[]) => void
  /** Deletes the rows of every unsure id, if any; never throws (a failure is retried later). */
  undo: () => Promise<void>
  readonly pending: number
  stop: () => void
}

const UNDO_SQL = 'DELETE FROM chat_messages WHERE id = ANY($1::uuid[])'

export function createUnsureWrites (o: {
  db: Kysely<Database>
  retryMs: number
  max: number
  /** Rows deleted (their commit had happened after all). */
  onUndone?: (rows: number) => void
  /** Ids given up past `max`. */
  onDropped?: (ids: number) => void
}): UnsureWrites {
  let ids = new Set<string>()
  let timer: NodeJS.Timeout | null = null
  let running: Promise<void> | null = null
  let stopped = false

  function schedule (): void {
    if (timer !== null || stopped || ids.size === 0) return
    timer = setTimeout(() => { timer = null; void undo() }, o.retryMs)
    timer.unref()
  }

  async function attempt (): Promise<void> {
    const taking = [...ids]
    try {
      const result = await o.db.executeQuery(CompiledQuery.raw(UNDO_SQL, [taking]))
      for (const id of taking) ids.delete(id)
      o.onUndone?.(Number(result.numAffectedRows ?? 0n))
    } catch {
      schedule()
    }
  }

  async function undo (): Promise<void> {
    if (ids.size === 0) return
    running ??= attempt().finally(() => { running = null })
    await running
  }

  return {
    add (batch) {
      for (const id of batch) ids.add(id)
      if (ids.size > o.max) {
        const all = [...ids]
        o.onDropped?.(all.length - o.max)
        ids = new Set(all.slice(all.length - o.max))
      }
      schedule()
    },
    undo,
    get pending () { return ids.size },
    stop () {
      stopped = true
      if (timer !== null) clearTimeout(timer)
      timer = null
    }
  }
}
