/**
 * POST /api/chatbot/messages: authenticate, validate, then run the chat (src/chat/run-chat.ts)
 * and answer with JSON — or, with `Accept: text/event-stream`, stream it as server-sent
 * events (`chunk`… then `done` or `error`).
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { runChat, type ChatSink, type RunChatDeps } from '../../chat/run-chat.js'
import { TetherError } from '../../errors.js'
import { describeFailure, failureFields } from '../../failure.js'
import { openExchange, sendError, sendJson, type Exchange } from '../exchange.js'
import { readBody } from '../read-body.js'
import { answerFailure, answerTooLarge, authenticate, type RouteDeps } from '../request-context.js'
import { openEventStream, type EventStreamLimits } from '../event-stream.js'
import { checkId, checkText, parseJsonObject } from '../validate.js'
import { ROUTES } from '../route-table.js'

/** Everything runChat needs (screening included), plus the HTTP plumbing. */
export interface ChatRouteDeps extends RouteDeps, RunChatDeps {
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

function eventStreamSink (deps: ChatRouteDeps, ex: Exchange, sessionId: string): ChatSink {
  const stream = openEventStream(deps.hooks, ex, deps.sse)
  return {
    chunk: (delta) => { stream.event('chunk', { delta }) },
    done: ({ messageId, content, latencyMs }) => {
      stream.event('done', { message_id: messageId, session_id: sessionId, content, latency_ms: latencyMs })
      stream.end(200)
    },
    fail: (err) => {
      // Nothing sent yet: a plain error response, with its real status.
      if (!stream.started) { answerFailure(deps, ex, err); return }
      const f = describeFailure(err, deps.log, { request_id: ex.requestId, route: ex.route })
      stream.event('error', { ...failureFields(f), request_id: ex.requestId })
      stream.end(f.status)
    },
    gone: () => ex.aborted
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
      const sink = streaming ? eventStreamSink(deps, ex, sessionId.value) : jsonSink(deps, ex, sessionId.value)
      // Relay mode has no users: the session id stands in for one.
      const cancel = runChat(deps, { requestId: ex.requestId, userId: user?.userId ?? sessionId.value, sessionId: sessionId.value, content: content.value }, sink)
      ex.onAbort = cancel
    })
  }
}

function invalid (deps: ChatRouteDeps, ex: Exchange, message: string): void {
  deps.log.info({ request_id: ex.requestId, problem: message }, 'invalid chat request')
  sendError(deps.hooks, ex, 'invalid_request', { message })
}
