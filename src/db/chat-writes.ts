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
import { createGroupCommit, type GroupCommit } from './group-commit.js'
import { createHistoryCache, type HistoryCache } from './history-cache.js'
import { isConnectionFailure } from './db-errors.js'
import { createUnsureWrites, type UnsureWrites } from './unsure-writes.js'
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
  /** HISTORY_MAX_MESSAGES: the turns kept per cached session. */
  historyMax: number
  /** HISTORY_CACHE_MAX_BYTES; 0: no cache, every user turn reads its history. */
  historyCacheMaxBytes: number
  onBatch?: (size: number, seconds: number) => void
  onSplit?: (size: number) => void
  onRefused?: () => void
  /** A user turn's history came from the cache (hit) or was read in the statement (miss). */
  onHistory?: (result: 'hit' | 'miss') => void
  /** Rows of batches whose commit was unknown, deleted after all (see unsure-writes.ts). */
  onUndone?: (rows: number) => void
}

export interface ChatWrites {
  /** Stores the user's message; returns the earlier turns, or null if the session is not the user's. */
  beginChat: (userId: string, sessionId: string, content: string, historyMax: number) => Promise<{ history: HistoryTurn[] } | null>
  /** Stores the assistant's turn: the answer, or (status other than complete) what arrived of it. */
  finishChat: (sessionId: string, content: string, status?: MessageStatus) => Promise<{ id: string }>
  readonly queued: number
  readonly committing: number
  /** Bytes held by the history cache. */
  readonly cacheBytes: number
  idle: () => Promise<void>
  /** After idle(): one last try at undoing unsure writes, and no more timers. */
  close: () => Promise<void>
}

/** `version`: the session's version as the statement saw it; `history`: null when the cache was current. */
interface Row { ord: number, version: string | null, history: HistoryTurn[] | null }

/**
 * One batch, whatever its size: every write is a row of the arrays $1..$9 (so the text never
 * changes and runs as a prepared statement, PREPARED_STATEMENTS). Rows are inserted in `ord`
 * order; a user turn is inserted only if its session is the user's. Each user turn's history is
 * read from the table as it was before the statement, unless the session's version there is the
 * one the gateway's cache holds ($9): then the cache has exactly those turns and the read is
 * skipped. An answer for a session that does not exist is inserted anyway, so that it fails on
 * the foreign key (and alone: group-commit.ts runs the batch again one write at a time).
 */
const BATCH_SQL = `
  WITH input AS (
    SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bigint[])
      AS t(ord, id, session_id, user_id, role, content, status, history_max, cached_version)
  ), accepted AS (
    SELECT i.*, s.version FROM input i LEFT JOIN chat_sessions s ON s.id = i.session_id
    WHERE i.role = 'assistant' OR s.user_id = i.user_id
  ), inserted AS (
    INSERT INTO chat_messages (id, session_id, role, content, status)
    SELECT id, session_id, role, content, status FROM accepted ORDER BY ord
    RETURNING id
  )
  SELECT a.ord, a.version::text AS version,
    CASE WHEN a.role = 'user' AND a.cached_version IS DISTINCT FROM a.version THEN (
      SELECT coalesce(json_agg(json_build_object('role', r.role, 'content', r.content) ORDER BY r.seq), '[]'::json)
      FROM (
        SELECT m.role, m.content, m.seq FROM chat_messages m
        WHERE m.session_id = a.session_id ORDER BY m.seq DESC LIMIT a.history_max
      ) r
    ) END AS history
  FROM accepted a`

/** The hot path's statements run prepared (pool.ts), by their text. */
export const PREPARED_STATEMENTS: ReadonlyMap<string, string> = new Map([[BATCH_SQL, 'tether_chat_write_batch']])

const newest = <T>(items: T[], max: number): T[] => items.length > max ? items.slice(items.length - max) : items

/**
 * Something failed after the statement had committed (the rows are stored): never a reason to
 * run the writes again one by one, which would store them twice.
 */
class AfterCommitError extends Error {
  constructor (cause: unknown) {
    super(`after the commit: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  }
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity constraint): one row's fault. */
function isRowFault (err: unknown): boolean {
  if (err instanceof AfterCommitError) return false
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code)
}

/** A deadlock or serialization failure the server broke by failing this statement: worth one more try. */
function isRetryable (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === '40P01' || code === '40001'
}

/**
 * What PostgreSQL will store of a text: a lone UTF-16 surrogate (a partial answer cut inside a
 * pair) becomes U+FFFD on the way in, so the cache must hold the same.
 */
const storable = (text: string): string => {
  // ES2024 methods (Node 20 has them; the project's lib is ES2023).
  const t = text as unknown as { isWellFormed: () => boolean, toWellFormed: () => string }
  return t.isWellFormed() ? text : t.toWellFormed()
}

/**
 * Runs one batch: one INSERT ... SELECT of every accepted row, with the history of each user
 * turn from the statement or the cache; then brings the cache up to date with what it stored.
 */
async function runBatch (db: Kysely<Database>, cache: HistoryCache | null, unsure: UnsureWrites, historyMax: number, ops: ChatWrite[], onHistory?: (result: 'hit' | 'miss') => void): Promise<ChatWriteResult[]> {
  // Rows of an earlier batch whose commit is unknown go first (unsure-writes.ts).
  if (unsure.pending > 0) await unsure.undo()
  const ids = ops.map(() => randomUUID())
  const contents = ops.map((o) => storable(o.content))
  // The version each user turn's session is cached at, when the cache can serve its bound.
  const cachedVersion = ops.map((o) => o.kind === 'user' && o.historyMax <= historyMax ? cache?.get(o.sessionId)?.version ?? null : null)
  // A read fills the cache too: it reads the cache's whole window, and each turn gets its own bound.
  const readMax = ops.map((o) => o.kind === 'user' ? (cache === null ? o.historyMax : Math.max(o.historyMax, historyMax)) : 0)
  let result
  try {
    result = await db.executeQuery<Row>(CompiledQuery.raw(BATCH_SQL, [
      ops.map((_, i) => i), ids, ops.map((o) => o.sessionId),
      ops.map((o) => o.kind === 'user' ? o.userId : null), ops.map((o) => o.kind),
      contents, ops.map((o) => o.kind === 'user' ? 'complete' : o.status),
      readMax, cachedVersion
    ]))
  } catch (err) {
    for (const o of ops) cache?.delete(o.sessionId)
    // The connection died with the statement sent: it may have committed. Its callers hear 503,
    // so its rows are deleted once the database answers again.
    if (isConnectionFailure(err)) unsure.add(ids)
    throw err
  }
  try {
    return afterCommit(result.rows, ops, ids, contents, cache, historyMax, onHistory)
  } catch (err) {
    for (const o of ops) cache?.delete(o.sessionId)
    throw new AfterCommitError(err)
  }
}

/** The answers for a committed batch, and the cache brought up to date. */
function afterCommit (resultRows: Row[], ops: ChatWrite[], ids: string[], contents: string[], cache: HistoryCache | null, historyMax: number, onHistory?: (result: 'hit' | 'miss') => void): ChatWriteResult[] {
  const rows = new Map<number, Row>()
  for (const row of resultRows) rows.set(Number(row.ord), row)

  // Per session, in order: the turns before this statement (from the cache or the read), the
  // version the statement saw, and this batch's rows so far. The statement's reads see the
  // table as it was before it, so a later turn's history gets the batch's earlier rows here.
  const sessions = new Map<string, { before: HistoryTurn[] | null, version: string | null, added: HistoryTurn[] }>()
  const answers = ops.map((op, ord): ChatWriteResult => {
    const row = rows.get(ord)
    if (row === undefined) return null
    let s = sessions.get(op.sessionId)
    if (s === undefined) {
      const cached = cache?.get(op.sessionId)
      s = { before: cached !== undefined && cached.version === row.version ? [...cached.turns] : null, version: row.version, added: [] }
      sessions.set(op.sessionId, s)
    }
    let answer: ChatWriteResult
    if (op.kind === 'user') {
      if (row.history !== null) s.before = row.history
      else if (s.before === null) throw new Error('history neither read nor cached') // the statement skips the read only for the cached version
      onHistory?.(row.history === null ? 'hit' : 'miss')
      answer = { history: newest([...s.before, ...s.added], op.historyMax) }
    } else {
      answer = { id: ids[ord] as string }
    }
    s.added.push({ role: op.kind, content: contents[ord] as string })
    return answer
  })
  if (cache !== null) {
    for (const [sessionId, s] of sessions) {
      // Known whole: the insert trigger has moved the version on by exactly this batch's rows,
      // unless another writer got in first, which the next batch's version check will show.
      if (s.before === null || s.version === null) cache.delete(sessionId)
      else cache.set(sessionId, { turns: newest([...s.before, ...s.added], historyMax), version: String(BigInt(s.version) + BigInt(s.added.length)) })
    }
  }
  return answers
}

export function createChatWrites (options: ChatWritesOptions): ChatWrites {
  const cache = options.historyCacheMaxBytes > 0 ? createHistoryCache(options.historyCacheMaxBytes) : null
  const unsure = createUnsureWrites({ db: options.db, retryMs: 1000, max: 100_000, ...(options.onUndone !== undefined ? { onUndone: options.onUndone } : {}) })
  const group: GroupCommit<ChatWrite, ChatWriteResult> = createGroupCommit({
    maxBatch: options.maxBatch,
    maxQueue: options.maxQueue,
    run: async (ops) => await runBatch(options.db, cache, unsure, options.historyMax, ops, options.onHistory),
    // A constraint or a value the server refused is one write's fault; an unavailable
    // database, a statement timeout, a read-only server or a missing permission is everyone's.
    isOpFault: isRowFault,
    isRetryable,
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
    get cacheBytes () { return cache?.bytes ?? 0 },
    idle: group.idle,
    async close () {
      await unsure.undo()
      unsure.stop()
    }
  }
}
