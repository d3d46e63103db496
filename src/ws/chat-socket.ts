/**
 * `/api/chatbot/ws`: chats over one socket, answered as they stream. Client
 * `{"type":"chat","id","session_id","content"}`; server `{"type":"start","id","request_id"}`,
 * `{"type":"chunk","id","request_id","seq","delta"}`… then `{"type":"done","id","message_id",
 * "content"}` or `{"type":"error","id","error","message"}`. A client whose socket dropped sends
 * `{"type":"resume","id","request_id","after_seq"}` on a new one and gets the rest; `{"type":
 * "cancel","request_id"}` is the Stop button. Same caps, deadlines and persistence as HTTP
 * (src/chat/run-chat.ts); a closed socket's chats wait STREAM_RESUME_GRACE_MS for a resume.
 */
import type { WebSocket, WebSocketBehavior } from 'uWebSockets.js'
import { runChat, type RunChatDeps } from '../chat/run-chat.js'
import type { Stream, StreamListener, StreamStore } from '../chat/stream-store.js'
import type { RemoteStreams } from '../cluster/stream-resume.js'
import { ERRORS, TetherError, type ErrorCode } from '../errors.js'
import { failureFields } from '../failure.js'
import { idRule, isValidId, newRequestId } from '../ids.js'
import { checkText } from '../http/validate.js'
import { parseFrame, type FrameReason } from './frames.js'
import { socketClosed, strike, tooBig, type EndpointDeps } from './endpoint.js'
import { socketLimits, type SocketData } from './socket-registry.js'
import { upgradeHandler } from './upgrade.js'
import { createOutbox, type OutboxData } from './outbox.js'
import { ROUTES } from '../http/route-table.js'

/** A chat this socket follows: its stream and the listener that writes its frames here. */
/** `stream` is null while another gateway is asked for it (`abort` stops asking). */
interface Followed { stream: Stream | null, listener: StreamListener, abort?: () => void }

export interface ChatSocketData extends SocketData, OutboxData {
  endpoint: 'chat'
  /** Chats followed on this socket, by the client's id. */
  chats: Map<string, Followed>
  strikes: number
}

export interface ChatSocketDeps extends RunChatDeps, EndpointDeps {
  streams: StreamStore
  /** Streams other gateways of the cluster hold (src/cluster/stream-resume.ts). */
  remote?: RemoteStreams
}

/** Whose streams this socket may resume and cancel: its user's; in relay mode anyone's it can name. */
function ownerOf (data: ChatSocketData): string | null {
  return data.userId === '' ? null : data.userId
}

export function chatSocket (deps: ChatSocketDeps): WebSocketBehavior<ChatSocketData> {
  const { send } = createOutbox()

  function reject (ws: WebSocket<ChatSocketData>, reason: FrameReason, message: string, id?: string): void {
    if (strike(ws, deps, reason)) return
    send(ws, { type: 'error', ...(id !== undefined ? { id } : {}), error: 'invalid_request', message })
  }

  /** A well-formed frame naming a stream that cannot be had: a clear error, and a strike (a flood of them closes the socket). */
  function refuse (ws: WebSocket<ChatSocketData>, code: ErrorCode, ids: { id?: string, request_id?: string }, message: string = ERRORS[code].message): void {
    if (strike(ws, deps, 'invalid')) return
    send(ws, { type: 'error', ...ids, error: code, message })
  }

  /** Writes one followed chat's frames to this socket, and forgets it when it ends. */
  function listenerFor (ws: WebSocket<ChatSocketData>, id: string, requestId: string): StreamListener {
    const listener: StreamListener = {
      chunk: (delta, seq) => { send(ws, { type: 'chunk', id, request_id: requestId, seq, delta }) },
      replaced: () => {
        const data = ws.getUserData()
        if (data.chats.get(id)?.listener === listener) data.chats.delete(id)
      },
      end: (end) => {
        const data = ws.getUserData()
        if (data.chats.get(id)?.listener === listener) data.chats.delete(id)
        if (end.type === 'done') send(ws, { type: 'done', id, request_id: requestId, message_id: end.messageId, content: end.content })
        else send(ws, { type: 'error', id, request_id: requestId, ...failureFields(end.failure) })
      }
    }
    return listener
  }

  function resume (ws: WebSocket<ChatSocketData>, id: string, requestId: unknown, afterSeq: unknown): void {
    if (!isValidId(requestId)) { reject(ws, 'invalid', `${idRule('request_id')}.`, id); return }
    if (typeof afterSeq !== 'number' || !Number.isSafeInteger(afterSeq) || afterSeq < 0) {
      reject(ws, 'invalid', 'after_seq must be a whole number >= 0 (the last seq received; 0 for all).', id)
      return
    }
    const data = ws.getUserData()
    for (const { stream } of data.chats.values()) {
      if (stream !== null && stream.requestId === requestId) { reject(ws, 'invalid', `This socket already follows request ${requestId}.`, id); return }
    }
    const listener = listenerFor(ws, id, requestId)
    // Followed before the replay: a stream that has ended ends (and is forgotten) inside it.
    const followed: Followed = { stream: null, listener }
    data.chats.set(id, followed)
    data.replay = 'first'
    let resumed: ReturnType<StreamStore['resume']>
    try {
      resumed = deps.streams.resume(requestId, ownerOf(data), listener, afterSeq)
    } finally {
      data.replay = 'off'
    }
    if (resumed !== 'not_found') followed.stream = resumed.stream
    if (resumed !== 'not_found' && (resumed.result === 'attached' || resumed.result === 'ended')) { data.strikes = 0; return }
    if (resumed === 'not_found' && resumeElsewhere(ws, id, requestId, afterSeq, followed)) return
    if (data.chats.get(id) === followed) data.chats.delete(id)
    if (resumed === 'not_found' || resumed.result === 'not_replayable') refuse(ws, 'stream_not_found', { id, request_id: requestId })
    else reject(ws, 'invalid', `after_seq ${afterSeq} is beyond the last chunk sent (${resumed.stream.chunks}).`, id)
  }

  /** Asks the other gateways and the workers for the stream; false when they are not asked. */
  function resumeElsewhere (ws: WebSocket<ChatSocketData>, id: string, requestId: string, afterSeq: number, followed: Followed): boolean {
    if (deps.remote === undefined) return false
    const data = ws.getUserData()
    let pending = true
    const abort = deps.remote.find({
      requestId,
      ownerId: ownerOf(data),
      listener: followed.listener,
      afterSeq,
      gone: () => data.closed || data.chats.get(id) !== followed,
      done: (outcome) => {
        pending = false
        followed.abort = undefined
        if (!(outcome instanceof TetherError)) { followed.stream = outcome; data.strikes = 0; return }
        if (data.chats.get(id) === followed) data.chats.delete(id)
        // Not a strike: the client named a stream it had, and the cluster lost it.
        if (!data.closed) send(ws, { type: 'error', id, request_id: requestId, error: outcome.code, message: outcome.message, ...(outcome.retryAfterS !== undefined ? { retry_after_s: outcome.retryAfterS } : {}) })
      }
    })
    if (abort === null) return false
    if (pending) followed.abort = abort
    return true
  }

  function cancel (ws: WebSocket<ChatSocketData>, requestId: unknown): void {
    if (!isValidId(requestId)) { reject(ws, 'invalid', `${idRule('request_id')}.`); return }
    const stream = deps.streams.get(requestId, ownerOf(ws.getUserData()))
    if (stream === null) { refuse(ws, 'stream_not_found', { request_id: requestId }); return }
    // The stream itself then ends with an error `cancelled`, on whichever socket follows it.
    if (stream.cancel() === 'already_settled') refuse(ws, 'already_settled', { request_id: requestId })
  }

  return {
    ...socketLimits(deps),
    upgrade: upgradeHandler<ChatSocketData>(deps.upgrade, {
      route: ROUTES.chatSocket.path,
      params: 0,
      check ({ user }) {
        return { endpoint: 'chat', userId: user?.userId ?? '', expiresAt: user?.expiresAt ?? 0, closed: false, closedBy: null, chats: new Map<string, Followed>(), strikes: 0, outbox: null, replay: 'off' }
      }
    }),
    open (ws) {
      deps.registry.add(ws)
      deps.onOpen?.()
    },
    message (ws, message, isBinary) {
      if (tooBig(ws, deps, message)) return
      const parsed = parseFrame(message, isBinary, ['chat', 'resume', 'cancel'])
      if (!parsed.ok) { reject(ws, parsed.reason, parsed.message); return }
      const data = ws.getUserData()
      if (data.expiresAt !== 0 && data.expiresAt * 1000 <= deps.clock.now()) { deps.registry.close(ws, 'token_expired'); return }
      const frame = parsed.frame
      if (frame.type === 'cancel') { cancel(ws, frame.request_id); return }
      const { id } = frame
      if (!isValidId(id)) { reject(ws, 'invalid', `${idRule('id')}.`); return }
      if (data.chats.has(id)) { reject(ws, 'invalid', `A chat with id ${id} is already in flight on this socket.`, id); return }
      if (frame.type === 'resume') { resume(ws, id, frame.request_id, frame.after_seq); return }
      const sessionId = frame.session_id
      if (!isValidId(sessionId)) { reject(ws, 'invalid', `${idRule('session_id')}.`, id); return }
      const content = checkText('content', frame.content)
      if (!content.ok) { reject(ws, 'invalid', content.message, id); return }
      data.strikes = 0
      const requestId = newRequestId()
      const listener = listenerFor(ws, id, requestId)
      const stream = deps.streams.open(requestId, ownerOf(data), listener)
      data.chats.set(id, { stream, listener })
      send(ws, { type: 'start', id, request_id: requestId })
      runChat(deps, { requestId, userId: data.userId === '' ? sessionId : data.userId, sessionId, content: content.value }, stream.sink)
    },
    close (ws, code, message) {
      socketClosed(ws, deps, code, message, (data) => {
        const followed = [...data.chats.values()]
        data.chats.clear()
        // Not cancelled: each chat waits STREAM_RESUME_GRACE_MS for its client to resume it —
        // unless this instance is shutting down, where nobody could resume it.
        const shuttingDown = data.closedBy === 'shutting_down'
        for (const { stream, listener, abort } of followed) {
          if (stream === null) abort?.()
          else if (shuttingDown) deps.chat.cancel(stream.requestId)
          else stream.detach(listener)
        }
      })
    }
  }
}
