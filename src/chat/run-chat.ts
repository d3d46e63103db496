/**
 * One chat from accepted input to its end, for every transport (JSON, server-sent events,
 * WebSocket): pre-check, screen the text (CONTENT_FILTERS), store the user's message and read
 * the history, dispatch it (dispatcher.ts), relay chunks, store the reply, and map each final
 * state to the contract's answer. The transport only says how to deliver chunks, the reply
 * and failures.
 */
import type { MessageStatus } from '../db/schema.js'
import { TetherError } from '../errors.js'
import type { ChatPersistence } from './chat-persistence.js'
import type { Dispatcher } from './dispatcher.js'
import type { ContentScreen } from './content-screen.js'
import type { Settlement } from './pending-registry.js'

export interface ChatSink {
  /** A chunk and its `seq` (1, 2, 3 ...). */
  chunk?: (delta: string, seq: number) => void
  done: (reply: { messageId: string, content: string, latencyMs: number }) => void
  /** A TetherError, or anything thrown by the database or a pool thread (see describeFailure). */
  fail: (err: unknown) => void
  /** True once the client has gone: nothing is published or delivered for it any more. */
  gone: () => boolean
  /** The chat ended with nobody to answer (its client left and did not come back). */
  abandoned?: () => void
  /** The chat was published: from now on it can be detached, resumed and cancelled by id. */
  submitted?: () => void
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
  /** Storing a partial answer failed (logged by the caller; the client's answer is unaffected). */
  onPartialLost?: (err: unknown, requestId: string) => void
}

/** How an answer that ended before its worker's `done` is stored (contract v1.1 statuses). */
function partialStatus (s: Settlement): MessageStatus {
  switch (s.outcome) {
    case 'cancelled': return 'cancelled'
    case 'stalled': return 'stalled'
    case 'timedOut': return 'timed_out'
    default: return s.cause === 'worker_error' ? 'failed' : 'interrupted'
  }
}

/** The contract's answer to a chat that ended without its worker's `done`; null: nobody to answer. */
function failureOf (deps: RunChatDeps, s: Settlement): TetherError | null {
  switch (s.outcome) {
    case 'timedOut': return new TetherError('llm_timeout')
    case 'stalled': return new TetherError('llm_stalled')
    // Stop pressed: the client is still there and hears it; a client that left hears nothing.
    case 'cancelled': return s.cancelReason === 'client_cancelled' ? new TetherError('cancelled') : null
    default:
      // The worker's own text stays in the logs (dispatcher.ts): a model server's error may
      // name internal hosts or quote part of an API key.
      if (s.cause === 'worker_error') return new TetherError('llm_error')
      if (s.cause === 'shutdown') return new TetherError('shutting_down')
      if (s.cause === 'worker_lost') return new TetherError('worker_lost', undefined, 1)
      if (s.cause === 'no_workers') return new TetherError('no_workers', 'No LLM worker took the chat: none is subscribed, or every one asked was busy; retry shortly.', 1)
      return new TetherError('llm_unavailable', 'The link to the model broker was lost.', deps.retryAfterS())
  }
}

function settle (deps: RunChatDeps, turn: ChatTurn, sink: ChatSink, s: Settlement): void {
  // Another gateway answers and stores it now: this one only lets its stream go.
  if (s.outcome === 'handedOver') { sink.abandoned?.(); return }
  if (s.outcome === 'done') {
    const content = s.text ?? ''
    deps.persistence.finish(turn.sessionId, content, s.requestId).then(
      (messageId) => { sink.done({ messageId, content, latencyMs: s.settledAt - s.startedAt }) },
      sink.fail
    )
    return
  }
  // What the user saw of an unfinished answer is kept, with how it ended. The answer does not
  // wait for it: the failure is the answer, and a store that fails is only logged.
  if (s.partial !== '') {
    deps.persistence.finish(turn.sessionId, s.partial, s.requestId, partialStatus(s)).catch((err: unknown) => {
      deps.onPartialLost?.(err, s.requestId)
    })
  }
  const failure = failureOf(deps, s)
  if (failure !== null) sink.fail(failure)
  else sink.abandoned?.()
}

/**
 * Takes over a chat another gateway started, whose worker now answers here (a stream resumed on
 * this gateway, src/cluster/stream-resume.ts): from here on it ends, is stored and is answered
 * as if it had started here. The worker re-sends its chunks from the first, so the partial
 * answer stored on an early end is the whole of it. Throws the TetherError a cap gives.
 */
export function adoptChat (deps: RunChatDeps, turn: Omit<ChatTurn, 'content'>, worker: { workerId: string | null, deadline: number }, sink: ChatSink): void {
  deps.chat.adopt(
    { requestId: turn.requestId, sessionId: turn.sessionId, userId: turn.userId, workerId: worker.workerId, deadline: worker.deadline },
    {
      ...(sink.chunk !== undefined ? { onChunk: sink.chunk } : {}),
      onSettle: (s) => { settle(deps, { ...turn, content: '' }, sink, s) }
    }
  )
  sink.submitted?.()
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
    sink.submitted?.()
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
