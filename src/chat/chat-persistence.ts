/**
 * What the chat path stores. `storedChats`: the user's message before publishing (with the
 * history read in the same statement) and the reply before answering. The history is cut by
 * message count in SQL and by characters here (cheap first cuts), then, given a trimmer, to
 * its token budget on a pool thread. `relayChats` (CHAT_MODE=relay): nothing stored, nothing
 * checked — for trusted networks.
 */
import type { ChatStore } from '../db/chat-store.js'
import type { ChatWrites } from '../db/chat-writes.js'
import type { MessageStatus } from '../db/schema.js'
import { trimToChars } from './history-budget.js'
import type { HistoryTurn } from '../mqtt/protocol.js'
import type { HistoryTrimmer } from './history-trimmer.js'
import type { SessionOwners } from './session-owners.js'

export interface ChatPersistence {
  readonly requiresAuth: boolean
  /**
   * Whether the user owns the session: the answer when the owner is remembered (almost
   * always), otherwise the lookup to run (the caller bounds how many run at once). Asked
   * before the chat holds a session's place under the caps.
   */
  owns: (userId: string, sessionId: string) => boolean | (() => Promise<boolean>)
  /** Stores the user's message; returns the earlier turns, or null if the session is not the user's. */
  begin: (userId: string, sessionId: string, content: string) => Promise<{ history: HistoryTurn[] } | null>
  /** Stores the reply (or, with a status other than complete, the partial answer); returns the id the client gets as message_id. */
  finish: (sessionId: string, content: string, requestId: string, status?: MessageStatus) => Promise<string>
}

/** `chats` answers ownership lookups; `writes` stores the turns, group-committed (db/chat-writes.ts). */
export function storedChats (chats: () => ChatStore, writes: () => ChatWrites, owners: SessionOwners, historyMaxMessages: number, historyMaxChars: number, tokens?: HistoryTrimmer): ChatPersistence {
  return {
    requiresAuth: true,
    owns (userId, sessionId) {
      const known = owners.owns(userId, sessionId)
      if (known !== undefined) return known
      return async () => {
        const owned = await chats().ownsSession(userId, sessionId)
        if (owned) owners.remember(sessionId, userId)
        return owned
      }
    },
    async begin (userId, sessionId, content) {
      const begun = await writes().beginChat(userId, sessionId, content, historyMaxMessages)
      if (begun === null) return null
      const history = trimToChars(begun.history, historyMaxChars)
      return { history: tokens === undefined ? history : await tokens.trim(history) }
    },
    async finish (sessionId, content, _requestId, status) { return (await writes().finishChat(sessionId, content, status)).id }
  }
}

const NO_HISTORY = Promise.resolve({ history: [] as HistoryTurn[] })

export const relayChats: ChatPersistence = {
  requiresAuth: false,
  owns: () => true,
  begin: () => NO_HISTORY,
  finish: (_sessionId, _content, requestId) => Promise.resolve(requestId)
}
