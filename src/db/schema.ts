/** Table types for kysely; docs/architecture.md describes the schema and its indexes. */
import type { ColumnType, Generated } from 'kysely'

type CreatedAt = ColumnType<Date, never, never>

export interface UsersTable {
  id: Generated<string>
  username: string
  password_hash: string
  created_at: CreatedAt
}

export interface ChatSessionsTable {
  id: Generated<string>
  user_id: string
  title: string
  created_at: CreatedAt
  /** Bumped by a trigger with every insert into the session's messages (migration 0003). */
  version: ColumnType<string, never, never>
}

export interface ChatMessagesTable {
  id: Generated<string>
  /** Strict order within a session: created_at can tie, an identity column cannot. */
  seq: ColumnType<string, never, never>
  session_id: string
  role: 'user' | 'assistant'
  content: string
  /** How the turn ended: an assistant turn may be a partial answer (contract v1.1). */
  status: ColumnType<MessageStatus, MessageStatus | undefined, never>
  created_at: CreatedAt
}

/** `complete` for every user turn and finished answer; the rest name how an answer ended early. */
export type MessageStatus = 'complete' | 'cancelled' | 'stalled' | 'timed_out' | 'failed' | 'interrupted'
export const MESSAGE_STATUSES: readonly MessageStatus[] = ['complete', 'cancelled', 'stalled', 'timed_out', 'failed', 'interrupted']

/** One login token bucket per key (`user:<name>`, `ip:<address>`), shared by every gateway. */
export interface LoginThrottleTable {
  key: string
  tokens: number
  updated_at: Generated<Date>
}

export interface Database {
  users: UsersTable
  chat_sessions: ChatSessionsTable
  chat_messages: ChatMessagesTable
  login_throttle: LoginThrottleTable
}
