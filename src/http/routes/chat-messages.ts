/**
 * POST /api/chatbot/messages: authenticate, validate, then run the chat (src/chat/run-chat.ts)
 * and answer with JSON — or, with `Accept: text/event-stream`, stream it as server-sent
 * events (`start`, `chunk`… then `done` or `error`), resumable (src/chat/stream-store.ts).
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { runChat, type ChatSink, type RunChatDeps } from '../../chat/run-chat.js'
import { TetherError } from '../../errors.js'
import { failureFields } from '../../failure.js'
import type { StreamListener, StreamStore } from '../../chat/stream-store.js'
import { openExchange, sendError, sendJson, type Exchange } from '../exchange.js'
import { readBody } from '../read-body.js'
import { answerFailure, answerTooLarge, authenticate, type RouteDeps } from '../request-context.js'
import { openEventStream, type EventStreamLimits } from '../event-stream.js'
import { checkId, checkText, parseJsonObject } from '../validate.js'
import { ROUTES } from '../route-table.js'

/** Everything runChat needs (screening included), plus the HTTP plumbing. */
export interface ChatRouteDeps extends RouteDeps, RunChatDeps {
  streams: StreamStore
  /** Bounds an event stream's backlog for a slow reader (absent: unbounded, for tests of other things). */
  sse?: EventStreamLimits
}


function jsonSink (deps: ChatRouteDeps, ex: Exchange, sessionId: string): ChatSink {
  return {
    done: ({ messageId, content, latencyMs }) => {
      sendJson(deps.hooks, ex, 200, { message_id: messageId, session_id: sessionId, reply: { role: 'assistant', content }, latency_ms: latencyMs })
    },
    fail: (err) => { answerFailure(deps, ex, err) },
    gone: () => ex.aborted
  }
}

/**
 * The event-stream listener of a stream: `start` once the chat is accepted (a chat refused at
 * once still gets a plain error with its real status), `chunk` events whose `id:` is their
 * seq, then `done` or `error`. Shared by the chat itself and a resume of it.
 */
export function eventStreamListener (deps: Pick<ChatRouteDeps, 'hooks' | 'log' | 'sse'>, ex: Exchange, requestId: string, sessionId: string | null): StreamListener {
  const events = openEventStream(deps.hooks, ex, deps.sse)
  return {
    start: () => { events.event('start', { request_id: requestId }) },
    // Another connection resumed the stream: this response ends (the client has moved on).
    replaced: () => { events.end(200) },
    chunk: (delta, seq) => { events.event('chunk', { delta, seq }, seq) },
    end: (end) => {
      if (end.type === 'done') {
        events.event('done', { message_id: end.messageId, ...(sessionId !== null ? { session_id: sessionId } : {}), content: end.content, latency_ms: end.latencyMs })
        events.end(200)
        return
      }
      const f = end.failure
      if (!events.started) {
        // Nothing sent yet: a plain error response, with its real status.
        sendError(deps.hooks, ex, f.code, { message: f.message, ...(f.retryAfterS !== undefined ? { retryAfterS: f.retryAfterS } : {}) })
        return
      }
      events.event('error', { ...failureFields(f), request_id: requestId })
      events.end(f.status)
    }
  }
}

export function chatMessagesHandler (deps: ChatRouteDeps): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.chatMessages.path)
    const streaming = req.getHeader('accept').includes('text/event-stream')
    const user = deps.persistence.requiresAuth ? authenticate(deps.tokens, req.getHeader('authorization')) : null
    if (user instanceof TetherError) {
      res.onData(() => {})
      sendError(deps.hooks, ex, user.code, { message: user.message })
      return
    }
    readBody(res, req.getHeader('content-length'), deps.maxBodyBytes, (result) => {
      if (!result.ok) { answerTooLarge(deps, ex, result.drained); return }
      const body = parseJsonObject(result.body)
      if (!body.ok) return invalid(deps, ex, body.message)
      const sessionId = checkId('session_id', body.value.session_id)
      if (!sessionId.ok) return invalid(deps, ex, sessionId.message)
      const content = checkText('content', body.value.content)
      if (!content.ok) return invalid(deps, ex, content.message)
      // Relay mode has no users: the session id stands in for one.
      const turn = { requestId: ex.requestId, userId: user?.userId ?? sessionId.value, sessionId: sessionId.value, content: content.value }
      if (!streaming) {
        ex.onAbort = runChat(deps, turn, jsonSink(deps, ex, sessionId.value))
        return
      }
      // A stream outlives this connection: its chat waits STREAM_RESUME_GRACE_MS for a resume
      // (GET /api/chatbot/streams/:request_id) before it is cancelled.
      const listener = eventStreamListener(deps, ex, ex.requestId, sessionId.value)
      const stream = deps.streams.open(ex.requestId, user?.userId ?? null, listener)
      ex.onAbort = () => { stream.detach(listener) }
      runChat(deps, turn, stream.sink)
    })
  }
}

function invalid (deps: ChatRouteDeps, ex: Exchange, message: string): void {
  deps.log.info({ request_id: ex.requestId, problem: message }, 'invalid chat request')
  sendError(deps.hooks, ex, 'invalid_request', { message })
}
