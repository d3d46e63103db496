/**
 * One chat from accepted input to its end, for every transport (JSON, server-sent events,
 * WebSocket): pre-check, screen the text (CONTENT_FILTERS), store the user's message and read
 * the history, dispatch it (dispatcher.ts), relay chunks, store the reply, and map each final
 * state to the contract's answer. The transport only says how to deliver chunks, the reply
 * and failures.
 */
import { TetherError } from '../errors.js'
import type { ChatPersistence } from './chat-persistence.js'
import type { Dispatcher } from './dispatcher.js'
import type { ContentScreen } from './content-screen.js'
import type { Settlement } from './pending-registry.js'

export interface ChatSink {
  chunk?: (delta: string) => void
  done: (reply: { messageId: string, content: string, latencyMs: number }) => void
  /** A TetherError, or anything thrown by the database or a pool thread (see describeFailure). */
  fail: (err: unknown) => void
  /** True once the client has gone: nothing is published or delivered for it any more. */
  gone: () => boolean
}

export interface ChatTurn {
  requestId: string
  userId: string
  sessionId: string
  content: string
}

export interface RunChatDeps {
  chat: Dispatcher
  persistence: ChatPersistence
  /** Seconds for Retry-After when the link drops under a request. */
  retryAfterS: () => number
  /** CONTENT_FILTERS: checked before anything is stored or published; absent when none are set. */
  screen?: ContentScreen
}

function settle (deps: RunChatDeps, turn: ChatTurn, sink: ChatSink, s: Settlement): void {
  switch (s.outcome) {
    case 'done': {
      const content = s.text ?? ''
      deps.persistence.finish(turn.sessionId, content, s.requestId).then(
        (messageId) => { sink.done({ messageId, content, latencyMs: s.settledAt - s.startedAt }) },
        sink.fail
      )
      return
    }
    case 'timedOut':
      sink.fail(new TetherError('llm_timeout'))
      return
    case 'cancelled':
      return // the client is gone; nothing to answer
    case 'failed':
      // The worker's own text stays in the logs (dispatcher.ts): a model server's error may
      // name internal hosts or quote part of an API key.
      if (s.cause === 'worker_error') sink.fail(new TetherError('llm_error'))
      else if (s.cause === 'shutdown') sink.fail(new TetherError('shutting_down'))
      else sink.fail(new TetherError('llm_unavailable', 'The link to the model broker was lost.', deps.retryAfterS()))
  }
}

/** Starts the chat; the returned function cancels it (the client went away). */
export function runChat (deps: RunChatDeps, turn: ChatTurn, sink: ChatSink): () => void {
  let requestId: string | null = null
  let cancelled = false
  let release: (() => void) | null = null
  const gone = (): boolean => cancelled || sink.gone()
  const run = async (): Promise<void> => {
    // Refuse before touching the database when the chat could not be sent anyway.
    deps.chat.checkOpen()
    // Ownership before a place under the caps: a stranger naming someone else's session must
    // not hold that session's places (nor spend its owner's share) while being refused.
    const known = deps.persistence.owns(turn.userId, turn.sessionId)
    let owned: boolean
    if (typeof known === 'boolean') {
      owned = known
    } else {
      // A database lookup: it holds one of the user's places while it runs, so a flood of
      // chats naming sessions nobody has seen costs that user their share, not everyone the pool.
      const hold = deps.chat.holdUser(turn.userId)
      try { owned = await known() } finally { hold() }
    }
    if (gone()) return
    if (!owned) throw new TetherError('session_not_found')
    // Held while the message is screened and stored, so concurrent chats cannot all pass the caps.
    const held = deps.chat.reserve(turn.sessionId, turn.userId)
    release = held
    // A client that left while its message was screened leaves nothing stored.
    if (deps.screen !== undefined) await deps.screen.check(turn.content)
    if (gone()) { held(); return }
    const begun = await deps.persistence.begin(turn.userId, turn.sessionId, turn.content)
    if (gone()) { held(); return }
    if (begun === null) throw new TetherError('session_not_found')
    requestId = deps.chat.submit(
      { requestId: turn.requestId, sessionId: turn.sessionId, userId: turn.userId, content: turn.content, history: begun.history },
      {
        ...(sink.chunk !== undefined ? { onChunk: sink.chunk } : {}),
        onSettle: (s) => { settle(deps, turn, sink, s) }
      },
      held
    )
  }
  run().catch((err: unknown) => {
    release?.()
    sink.fail(err)
  })
  return () => {
    cancelled = true
    if (requestId !== null) deps.chat.cancel(requestId)
  }
}
