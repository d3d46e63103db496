/**
 * One chat from accepted input to its end, for every transport (JSON, server-sent events,
 * WebSocket): pre-check, screen the text (CONTENT_FILTERS), store the user's message and read
 * the history, publish, relay chunks, store the reply, and map each final state to the
 * contract's answer. The transport only says how to deliver chunks, the reply and failures.
 */
import { TetherError } from '../errors.js'
import type { ChatPersistence } from './chat-persistence.js'
import type { ChatService } from './chat-service.js'
import type { ContentScreen } from './content-screen.js'
import type { Settlement } from './pending-registry.js'

export interface ChatSink {
  chunk?: (delta: string) => void
  done: (reply: { messageId: string, content: string, latencyMs: number }) => void
  /** A TetherError, or anything thrown by the database or a worker thread (see describeFailure). */
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
  chat: ChatService
  persistence: ChatPersistence
  /** Seconds for Retry-After when the link drops under a request. */
  retryAfterS: () => number
  /** CONTENT_FILTERS: checked before anything is stored or published; absent when none are set. */
  screen?: ContentScreen
}

/** How long a worker's error text may be when passed on to the client. */
const MAX_WORKER_ERROR = 500

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
      if (s.cause === 'worker_error') sink.fail(new TetherError('llm_error', `The model worker reported an error: ${(s.text ?? '').slice(0, MAX_WORKER_ERROR)}`))
      else if (s.cause === 'shutdown') sink.fail(new TetherError('shutting_down'))
      else sink.fail(new TetherError('llm_unavailable', 'The link to the model broker was lost.', deps.retryAfterS()))
  }
}

/** Starts the chat; the returned function cancels it (the client went away). */
export function runChat (deps: RunChatDeps, turn: ChatTurn, sink: ChatSink): () => void {
  let requestId: string | null = null
  let cancelled = false
  let release: () => void
  try {
    // Refuse before touching the database when the chat could not be sent anyway, and hold
    // its place under the caps while its message is screened and stored.
    release = deps.chat.reserve(turn.sessionId)
  } catch (err) {
    sink.fail(err)
    return () => {}
  }
  const begin = (): Promise<void> => deps.persistence.begin(turn.userId, turn.sessionId, turn.content).then((begun) => {
    if (cancelled || sink.gone()) { release(); return }
    if (begun === null) throw new TetherError('session_not_found')
    requestId = deps.chat.submit(
      { requestId: turn.requestId, sessionId: turn.sessionId, userId: turn.userId, content: turn.content, history: begun.history },
      {
        ...(sink.chunk !== undefined ? { onChunk: sink.chunk } : {}),
        onSettle: (s) => { settle(deps, turn, sink, s) }
      },
      release
    )
  })
  const screen = deps.screen
  const started = screen === undefined
    ? begin()
    : screen.check(turn.content).then(() => {
      // A client that left while its message was screened leaves nothing stored.
      if (cancelled || sink.gone()) { release(); return }
      return begin()
    })
  started.catch((err: unknown) => {
    release()
    sink.fail(err)
  })
  return () => {
    cancelled = true
    if (requestId !== null) deps.chat.cancel(requestId)
  }
}
