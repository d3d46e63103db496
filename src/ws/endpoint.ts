/**
 * What the two WebSocket endpoints (hints-socket.ts, chat-socket.ts) share around their own
 * frames: their dependencies, the strike rule for rejected frames, the size check, and the
 * bookkeeping of a closed socket. Each endpoint keeps only what differs: its frames, its reply
 * to a rejected one, and what it frees when its socket goes.
 */
import type { WebSocket } from 'uWebSockets.js'
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { MAX_STRIKES, type FrameReason } from './frames.js'
import { closeReasonOf, type SocketData, type SocketLimits, type SocketRegistry } from './socket-registry.js'
import type { UpgradeDeps } from './upgrade.js'

/** What both WebSocket endpoints need besides their own parts: the upgrade, the registry, limits, events. */
export interface EndpointDeps extends SocketLimits {
  upgrade: UpgradeDeps
  registry: SocketRegistry
  clock: Clock
  log: Logger
  onOpen?: () => void
  onClose?: (reason: string) => void
  onRejected?: (reason: FrameReason) => void
}

/** True (and the socket closed with 1009) when a frame is over WS_MAX_PAYLOAD_BYTES. */
export function tooBig (ws: WebSocket<SocketData>, deps: EndpointDeps, message: ArrayBuffer): boolean {
  if (message.byteLength <= deps.maxPayloadBytes) return false
  deps.onRejected?.('too_big')
  deps.registry.close(ws, 'message_too_big')
  return true
}

/**
 * Counts a rejected frame against the socket. True when that closed it: a binary frame at
 * once, any other after MAX_STRIKES in a row; otherwise the endpoint answers the frame.
 */
export function strike (ws: WebSocket<SocketData & { strikes: number }>, deps: EndpointDeps, reason: FrameReason): boolean {
  deps.onRejected?.(reason)
  if (reason === 'binary') { deps.registry.close(ws, 'unsupported_data'); return true }
  if (++ws.getUserData().strikes >= MAX_STRIKES) { deps.registry.close(ws, 'policy_violation'); return true }
  return false
}

/** A socket has closed: it is marked, leaves the registry, `release` frees the endpoint's parts, and why is logged and counted. */
export function socketClosed<T extends SocketData> (ws: WebSocket<T>, deps: EndpointDeps, code: number, message: ArrayBuffer, release: (data: T) => void): void {
  const data = ws.getUserData()
  data.closed = true
  deps.registry.remove(ws)
  release(data)
  const text = Buffer.from(message).toString()
  const reason = closeReasonOf(data, code, text)
  deps.log.debug({ endpoint: data.endpoint, code, message: text, reason }, 'websocket closed')
  deps.onClose?.(reason)
}
