/**
 * `/api/chatbot/ws`: chats over one socket, answered as they stream. Client
 * `{"type":"chat","id","session_id","content"}`; server `{"type":"chunk","id","delta"}`… then
 * `{"type":"done","id","message_id","content"}` or `{"type":"error","id","error","message"}`.
 * Same caps, deadlines and persistence as HTTP (src/chat/run-chat.ts); closing the socket
 * cancels its chats.
 */
import type { WebSocket, WebSocketBehavior } from 'uWebSockets.js'
import { runChat, type RunChatDeps } from '../chat/run-chat.js'
import { describeFailure, failureFields } from '../failure.js'
import { idRule, isValidId, newRequestId } from '../ids.js'
import { checkText } from '../http/validate.js'
import { parseFrame, type FrameReason } from './frames.js'
import { socketClosed, strike, tooBig, type EndpointDeps } from './endpoint.js'
import { socketLimits, type SocketData } from './socket-registry.js'
import { upgradeHandler } from './upgrade.js'
import { ROUTES } from '../http/route-table.js'

export interface ChatSocketData extends SocketData {
  endpoint: 'chat'
  /** In-flight chats by the client's id, with their cancel functions. */
  chats: Map<string, () => void>
  strikes: number
}

export interface ChatSocketDeps extends RunChatDeps, EndpointDeps {}


/** Frames are sent from MQTT and database callbacks, outside uWS's own: corked, as uWS requires there. */
function send (ws: WebSocket<ChatSocketData>, frame: unknown): void {
  if (ws.getUserData().closed) return
  const text = JSON.stringify(frame)
  ws.cork(() => { ws.send(text) })
}

export function chatSocket (deps: ChatSocketDeps): WebSocketBehavior<ChatSocketData> {
  function reject (ws: WebSocket<ChatSocketData>, reason: FrameReason, message: string, id?: string): void {
    if (strike(ws, deps, reason)) return
    send(ws, { type: 'error', ...(id !== undefined ? { id } : {}), error: 'invalid_request', message })
  }

  return {
    ...socketLimits(deps),
    upgrade: upgradeHandler<ChatSocketData>(deps.upgrade, {
      route: ROUTES.chatSocket.path,
      params: 0,
      check ({ user }) {
        return { endpoint: 'chat', userId: user?.userId ?? '', expiresAt: user?.expiresAt ?? 0, closed: false, closedBy: null, chats: new Map(), strikes: 0 }
      }
    }),
    open (ws) {
      deps.registry.add(ws)
      deps.onOpen?.()
    },
    message (ws, message, isBinary) {
      if (tooBig(ws, deps, message)) return
      const parsed = parseFrame(message, isBinary, ['chat'])
      if (!parsed.ok) { reject(ws, parsed.reason, parsed.message); return }
      const data = ws.getUserData()
      if (data.expiresAt !== 0 && data.expiresAt * 1000 <= deps.clock.now()) { deps.registry.close(ws, 'token_expired'); return }
      const { id, session_id: sessionId } = parsed.frame
      if (!isValidId(id)) { reject(ws, 'invalid', `${idRule('id')}.`); return }
      if (!isValidId(sessionId)) { reject(ws, 'invalid', `${idRule('session_id')}.`, id); return }
      const content = checkText('content', parsed.frame.content)
      if (!content.ok) { reject(ws, 'invalid', content.message, id); return }
      if (data.chats.has(id)) { reject(ws, 'invalid', `A chat with id ${id} is already in flight on this socket.`, id); return }
      data.strikes = 0
      const requestId = newRequestId()
      // A chat refused at once (caps, link down) finishes inside runChat, before it could be
      // recorded as in flight: remember that, so its id is free again.
      let finished = false
      const finish = (): void => { finished = true; data.chats.delete(id) }
      const cancel = runChat(deps, { requestId, userId: data.userId === '' ? sessionId : data.userId, sessionId, content: content.value }, {
        chunk: (delta) => { send(ws, { type: 'chunk', id, delta }) },
        done: ({ messageId, content: text }) => {
          finish()
          send(ws, { type: 'done', id, message_id: messageId, content: text })
        },
        fail: (err) => {
          finish()
          const f = describeFailure(err, deps.log, { request_id: requestId, route: ROUTES.chatSocket.path })
          send(ws, { type: 'error', id, ...failureFields(f) })
        },
        gone: () => data.closed
      })
      if (!finished) data.chats.set(id, cancel)
    },
    close (ws, code, message) {
      socketClosed(ws, deps, code, message, (data) => {
        const cancels = [...data.chats.values()]
        data.chats.clear()
        for (const cancel of cancels) cancel()
      })
    }
  }
}
