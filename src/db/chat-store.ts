/**
 * Chat sessions and their messages. Every read and write is scoped to the owner: another
 * user's session looks exactly like a missing one. The chat hot path is two statements per
 * chat: `beginChat` (ownership, history and the user's message in one round trip) and
 * `finishChat` (the assistant's message).
 */
import { sql, type Kysely } from 'kysely'
import type { HistoryTurn } from '../mqtt/protocol.js'
import type { Database, MessageStatus } from './schema.js'

/** Session and message ids are UUIDs; anything else cannot exist and is not sent to the database. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export function isUuid (value: string): boolean { return UUID.test(value) }

export interface SessionRow { id: string, title: string, created_at: Date }
export interface MessageRow { id: string, role: 'user' | 'assistant', content: string, status: MessageStatus, created_at: Date }

export function createChatStore (db: Kysely<Database>) {
  return {
    async createSession (userId: string, title: string): Promise<SessionRow> {
      return await db.insertInto('chat_sessions').values({ user_id: userId, title })
        .returning(['id', 'title', 'created_at']).executeTakeFirstOrThrow()
    },
    async listSessions (userId: string, limit: number): Promise<SessionRow[]> {
      return await db.selectFrom('chat_sessions').select(['id', 'title', 'created_at'])
        .where('user_id', '=', userId).orderBy('created_at', 'desc').limit(limit).execute()
    },
    async ownsSession (userId: string, sessionId: string): Promise<boolean> {
      if (!isUuid(sessionId)) return false
      const row = await db.selectFrom('chat_sessions').select('id')
        .where('id', '=', sessionId).where('user_id', '=', userId).executeTakeFirst()
      return row !== undefined
    },
    /** The newest `limit` messages, oldest first; null when the session does not exist or is not the user's. */
    async listMessages (userId: string, sessionId: string, limit: number): Promise<MessageRow[] | null> {
      if (!isUuid(sessionId)) return null
      const owned = await db.selectFrom('chat_sessions').select('id')
        .where('id', '=', sessionId).where('user_id', '=', userId).executeTakeFirst()
      if (owned === undefined) return null
      // The newest `limit`, returned oldest first.
      const newest = await db.selectFrom('chat_messages').select(['id', 'role', 'content', 'status', 'created_at', 'seq'])
        .where('session_id', '=', sessionId).orderBy('seq', 'desc').limit(limit).execute()
      return newest.reverse().map(({ seq: _seq, ...row }) => row)
    },
    /**
     * Stores the user's message and returns the session's earlier turns (oldest first, at
     * most `historyMax`), in one statement; null when the session is not the user's. The
     * history CTE reads the snapshot from before the insert, so it never includes the new
     * message (PostgreSQL: data-modifying statements in WITH).
     */
    async beginChat (userId: string, sessionId: string, content: string, historyMax: number): Promise<{ history: HistoryTurn[] } | null> {
      if (!isUuid(sessionId)) return null
      const result = await sql<{ inserted: string | null, history: HistoryTurn[] | null }>`
        WITH owned AS (
          SELECT id FROM chat_sessions WHERE id = ${sessionId} AND user_id = ${userId}
        ), recent AS (
          SELECT role, content, seq FROM chat_messages
          WHERE session_id = (SELECT id FROM owned)
          ORDER BY seq DESC LIMIT ${historyMax}
        ), inserted AS (
          INSERT INTO chat_messages (session_id, role, content)
          SELECT id, 'user', ${content} FROM owned
          RETURNING id
        )
        SELECT (SELECT id FROM inserted) AS inserted,
               (SELECT json_agg(json_build_object('role', role, 'content', content) ORDER BY seq) FROM recent) AS history
      `.execute(db)
      const row = result.rows[0]
      if (row === undefined || row.inserted === null) return null
      return { history: row.history ?? [] }
    },
    /** Stores the assistant's turn: the answer, or (status other than complete) what arrived of it. */
    async finishChat (sessionId: string, content: string, status: MessageStatus = 'complete'): Promise<{ id: string, created_at: Date }> {
      return await db.insertInto('chat_messages').values({ session_id: sessionId, role: 'assistant', content, status })
        .returning(['id', 'created_at']).executeTakeFirstOrThrow()
    }
  }
}

export type ChatStore = ReturnType<typeof createChatStore>
