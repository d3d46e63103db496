/**
 * The two routes of a resumable stream (contract v1.1), owner only:
 * `GET /api/chatbot/streams/:request_id` with `Last-Event-ID: N` replays every chunk after N as
 * server-sent events and goes on live (404 stream_not_found when it cannot be replayed whole);
 * `POST /api/chatbot/messages/:request_id/cancel` is the Stop button (200, 404, 409).
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import type { Stream, StreamStore } from '../../chat/stream-store.js'
import type { RemoteStreams } from '../../cluster/stream-resume.js'
import { TetherError } from '../../errors.js'
import { idRule, isValidId } from '../../ids.js'
import { openExchange, sendError } from '../exchange.js'
import { authenticate, jsonRoute, type RouteDeps } from '../request-context.js'
import { ROUTES } from '../route-table.js'
import type { EventStreamLimits } from '../event-stream.js'
import { eventStreamListener } from './chat-messages.js'

export interface StreamRouteDeps extends RouteDeps {
  streams: StreamStore
  /** Streams other gateways of the cluster hold (src/cluster/stream-resume.ts). */
  remote?: RemoteStreams
  /** Relay mode: no token; a stream is found by its (unguessable) request id alone. */
  requiresAuth: boolean
  sse?: EventStreamLimits
}

/** Last-Event-ID: the last seq the client has; absent or empty, 0 (replay all). */
function lastEventId (header: string): number | null {
  if (header === '') return 0
  if (!/^\d{1,15}$/.test(header)) return null
  return Number(header)
}

export function resumeStreamHandler (deps: StreamRouteDeps): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.resumeStream.path)
    const requestId = req.getParameter(0) ?? ''
    const after = lastEventId(req.getHeader('last-event-id').trim())
    const user = deps.requiresAuth ? authenticate(deps.tokens, req.getHeader('authorization')) : null
    if (user instanceof TetherError) { sendError(deps.hooks, ex, user.code, { message: user.message }); return }
    if (!isValidId(requestId)) { sendError(deps.hooks, ex, 'invalid_request', { message: `${idRule('request_id')}.` }); return }
    if (after === null) { sendError(deps.hooks, ex, 'invalid_request', { message: 'Last-Event-ID must be a whole number >= 0 (the last chunk id received).' }); return }
    const listener = eventStreamListener(deps, ex, requestId, null)
    // Set before the replay: a replay past SSE_MAX_BACKPRESSURE closes the connection inside it.
    let attachedTo: Stream | null = null
    let stopLooking: (() => void) | null = null
    ex.onAbort = () => { attachedTo?.detach(listener); stopLooking?.() }
    // Nothing is written unless the whole rest can be: the answers below are still plain.
    const ownerId = user?.userId ?? null
    const resumed = deps.streams.resume(requestId, ownerId, listener, after)
    if (resumed === 'not_found' && deps.remote !== undefined) {
      // Another gateway may hold it, or its worker: the answer waits for them (2 s at most).
      let pending = true
      const abort = deps.remote.find({
        requestId,
        ownerId,
        listener,
        afterSeq: after,
        gone: () => ex.aborted,
        done: (outcome) => {
          pending = false
          stopLooking = null
          if (outcome instanceof TetherError) {
            if (!ex.aborted) sendError(deps.hooks, ex, outcome.code, { message: outcome.message, ...(outcome.retryAfterS !== undefined ? { retryAfterS: outcome.retryAfterS } : {}) })
            return
          }
          attachedTo = outcome
          if (ex.aborted) outcome.detach(listener)
        }
      })
      if (abort !== null) {
        if (pending) stopLooking = abort
        return
      }
    }
    if (resumed === 'not_found' || resumed.result === 'not_replayable') { sendError(deps.hooks, ex, 'stream_not_found'); return }
    const { stream, result } = resumed
    if (result === 'beyond_end') { sendError(deps.hooks, ex, 'invalid_request', { message: `Last-Event-ID ${after} is beyond the last chunk sent (${stream.chunks}).` }); return }
    if (result === 'attached') {
      attachedTo = stream
      if (ex.aborted) stream.detach(listener)
    }
  }
}

export function cancelChatHandler (deps: StreamRouteDeps): (res: HttpResponse, req: HttpRequest) => void {
  return jsonRoute(deps, {
    route: ROUTES.cancelChat.path,
    auth: deps.requiresAuth,
    readsBody: true,
    emptyBodyOk: true,
    params: 1,
    async handle ({ user, params }) {
      const requestId = params[0] ?? ''
      if (!isValidId(requestId)) throw new TetherError('invalid_request', `${idRule('request_id')}.`)
      const stream = deps.streams.get(requestId, user?.userId ?? null)
      if (stream === null) throw new TetherError('stream_not_found')
      if (stream.cancel() === 'already_settled') throw new TetherError('already_settled')
      return { status: 200, body: { request_id: requestId, status: 'cancelled' } }
    }
  })
}
