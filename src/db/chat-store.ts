/**
 * Chat sessions and their messages. Every read and write is scoped to the owner: another
 * user's session looks exactly like a missing one. The chat hot path's writes (each chat's
 * turns, with its history read) are chat-writes.ts's, group-committed.
 */
import type { Kysely } from 'kysely'
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
    }
  }
}

export type ChatStore = ReturnType<typeof createChatStore>
