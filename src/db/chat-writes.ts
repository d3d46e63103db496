/**
 * The chat hot path's writes, group-committed (group-commit.ts): the user's turn of a chat
 * (with the session's history read in the same statement) and the assistant's turn (an answer,
 * or a partial one with its status). A batch of them, of both kinds and for any sessions, is ONE
 * statement: an INSERT of every row in submission order, so that two chats on one session store
 * their turns in the order they were sent, and one commit where there were two per chat.
 *
 * Ownership is checked inside the statement (a user's turn for a session that is not the user's
 * is not inserted, and its caller gets null); the history of each user turn is the session's
 * newest messages before the statement plus the batch's own earlier rows for that session, so a
 * batch answers exactly what one statement per write would have.
 */
import { randomUUID } from 'node:crypto'
import { CompiledQuery, type Kysely } from 'kysely'
import type { HistoryTurn } from '../mqtt/protocol.js'
import { isUuid } from './chat-store.js'
import { classifyDbError } from './db-errors.js'
import { createGroupCommit, type GroupCommit } from './group-commit.js'
import type { Database, MessageStatus } from './schema.js'

export type ChatWrite =
  | { kind: 'user', userId: string, sessionId: string, content: string, historyMax: number }
  | { kind: 'assistant', sessionId: string, content: string, status: MessageStatus }

export type ChatWriteResult = { history: HistoryTurn[] } | { id: string } | null

export interface ChatWritesOptions {
  db: Kysely<Database>
  /** Writes per batch (DB_WRITE_BATCH_MAX). */
  maxBatch: number
  /** User turns (new chats) waiting before one more is refused with 503 overloaded (DB_WRITE_QUEUE_MAX); answers are always queued. */
  maxQueue: number
  onBatch?: (size: number, seconds: number) => void
  onSplit?: (size: number) => void
  onRefused?: () => void
}

export interface ChatWrites {
  /** Stores the user's message; returns the earlier turns, or null if the session is not the user's. */
  beginChat: (userId: string, sessionId: string, content: string, historyMax: number) => Promise<{ history: HistoryTurn[] } | null>
  /** Stores the assistant's turn: the answer, or (status other than complete) what arrived of it. */
  finishChat: (sessionId: string, content: string, status?: MessageStatus) => Promise<{ id: string }>
  readonly queued: number
  readonly committing: number
  idle: () => Promise<void>
}

interface Row { ord: number, history: HistoryTurn[] | null }

/**
 * One batch, whatever its size: every write is a row of the arrays $1..$8 (so the text never
 * changes and runs as a prepared statement, PREPARED_STATEMENTS). Rows are inserted in `ord`
 * order; a user turn is inserted only if its session is the user's; each user turn's history
 * is read from the table as it was before the statement.
 */
const BATCH_SQL = `
  WITH input AS (
    SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[])
      AS t(ord, id, session_id, user_id, role, content, status, history_max)
  ), accepted AS (
    SELECT i.* FROM input i
    WHERE i.role = 'assistant'
       OR EXISTS (SELECT 1 FROM chat_sessions s WHERE s.id = i.session_id AND s.user_id = i.user_id)
  ), inserted AS (
    INSERT INTO chat_messages (id, session_id, role, content, status)
    SELECT id, session_id, role, content, status FROM accepted ORDER BY ord
    RETURNING id
  )
  SELECT a.ord,
    CASE WHEN a.role = 'user' THEN (
      SELECT json_agg(json_build_object('role', r.role, 'content', r.content) ORDER BY r.seq)
      FROM (
        SELECT m.role, m.content, m.seq FROM chat_messages m
        WHERE m.session_id = a.session_id ORDER BY m.seq DESC LIMIT a.history_max
      ) r
    ) END AS history
  FROM accepted a`

/** The hot path's statements run prepared (pool.ts), by their text. */
export const PREPARED_STATEMENTS: ReadonlyMap<string, string> = new Map([[BATCH_SQL, 'tether_chat_write_batch']])

/** Runs one batch: one INSERT ... SELECT of every accepted row, and the history of each user turn. */
async function runBatch (db: Kysely<Database>, ops: ChatWrite[]): Promise<ChatWriteResult[]> {
  const ids = ops.map(() => randomUUID())
  const result = await db.executeQuery<Row>(CompiledQuery.raw(BATCH_SQL, [
    ops.map((_, i) => i), ids, ops.map((o) => o.sessionId),
    ops.map((o) => o.kind === 'user' ? o.userId : null), ops.map((o) => o.kind),
    ops.map((o) => o.content), ops.map((o) => o.kind === 'user' ? 'complete' : o.status),
    ops.map((o) => o.kind === 'user' ? o.historyMax : 0)
  ]))
  const accepted = new Map<number, HistoryTurn[] | null>()
  for (const row of result.rows) accepted.set(Number(row.ord), row.history)
  // The statement's reads see the table as it was before it: a user turn's history lacks the
  // rows this batch stored before it for the same session. They are added here, in order.
  const earlier = new Map<string, HistoryTurn[]>()
  return ops.map((op, ord) => {
    if (!accepted.has(ord)) return null
    const mine = earlier.get(op.sessionId) ?? []
    let answer: ChatWriteResult
    if (op.kind === 'user') {
      const history = [...(accepted.get(ord) ?? []), ...mine]
      answer = { history: history.length > op.historyMax ? history.slice(history.length - op.historyMax) : history }
    } else {
      answer = { id: ids[ord] as string }
    }
    mine.push({ role: op.kind, content: op.content })
    earlier.set(op.sessionId, mine)
    return answer
  })
}

export function createChatWrites (options: ChatWritesOptions): ChatWrites {
  const group: GroupCommit<ChatWrite, ChatWriteResult> = createGroupCommit({
    maxBatch: options.maxBatch,
    maxQueue: options.maxQueue,
    run: async (ops) => await runBatch(options.db, ops),
    // A constraint or a value the server refused is one write's fault; an unavailable
    // database (and a statement timeout) is everyone's.
    isOpFault: (err) => classifyDbError(err) !== 'unavailable',
    ...(options.onBatch !== undefined ? { onBatch: options.onBatch } : {}),
    ...(options.onSplit !== undefined ? { onSplit: options.onSplit } : {}),
    ...(options.onRefused !== undefined ? { onRefused: options.onRefused } : {})
  })
  return {
    async beginChat (userId, sessionId, content, historyMax) {
      if (!isUuid(sessionId)) return null
      return await group.submit({ kind: 'user', userId, sessionId, content, historyMax }) as { history: HistoryTurn[] } | null
    },
    async finishChat (sessionId, content, status = 'complete') {
      // Owed: its chat was accepted and answered; the queue's bound is for new chats.
      const stored = await group.submit({ kind: 'assistant', sessionId, content, status }, true)
      if (stored === null || !('id' in stored)) throw new Error('an assistant turn was not stored')
      return stored
    },
    get queued () { return group.queued },
    get committing () { return group.committing },
    idle: group.idle
  }
}
