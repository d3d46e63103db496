/**
 * Every open WebSocket, by endpoint: for the gauges, for closing them all with a "reconnect"
 * code at shutdown, and for the backpressure sweep. uWebSockets.js is given twice
 * WS_MAX_BACKPRESSURE and drops what a slow reader cannot take beyond that (so memory stays
 * bounded); it could also close such a socket, but with no code and no reason. The sweep
 * closes a socket whose buffered output passes the limit with 4001, so the reason is counted
 * and the client told — when the reader is so far behind that even the close frame does not
 * fit, it is still closed and counted, and learns of it when its connection ends.
 * One pass over 10,000 sockets is ~10,000 native getBufferedAmount() calls, about 1 ms, once a
 * second; fan-out itself never loops over sockets (native topic publish). The same pass
 * closes sockets whose token has expired (4002). Keep-alive pings are sent from here too,
 * spread over time by a ping wheel (ping-wheel.ts) rather than by uWS in bursts.
 */
import type { WebSocket } from 'uWebSockets.js'
import type { Clock } from '../clock.js'
import { CLOSE_CODES, type CloseReason } from '../close-codes.js'
import { createPingWheel } from './ping-wheel.js'

export type Endpoint = 'hints' | 'chat'

export interface SocketData {
  endpoint: Endpoint
  userId: string
  /** Set once the close handler has run: the socket must not be touched after. */
  closed: boolean
  /** Why we closed it, for the metrics; unset when the peer or the network did. */
  closedBy: CloseReason | null
  /** Epoch seconds when the socket's token expires (0: none, relay mode). */
  expiresAt: number
}

/** The uWS limits both sockets share (WS_IDLE_TIMEOUT_S, WS_MAX_PAYLOAD_BYTES, WS_MAX_BACKPRESSURE). */
export interface SocketLimits {
  idleTimeoutS: number
  maxPayloadBytes: number
  maxBackpressure: number
}

export function socketLimits (limits: SocketLimits): {
  idleTimeout: number
  sendPingsAutomatically: boolean
  maxPayloadLength: number
  maxBackpressure: number
  closeOnBackpressureLimit: number
} {
  return {
    // uWS's own pings stay on, as the backstop they were: the ping wheel pings every live
    // socket before uWS's timer for it runs out (pingIntervalMs), so uWS pings only a peer
    // that did not answer ours, and closes it at the idle timeout — within 1x to 2x of it.
    // Turning them off was tried: an async upgrade in this uWS build can leave a fresh socket
    // with a garbage timeout (upgrade.ts), which with automatic pings only costs a ping but
    // without them closed live sockets within seconds (test/integration/ws-subscriptions).
    idleTimeout: limits.idleTimeoutS,
    sendPingsAutomatically: true,
    // uWS's own limit is a backstop at twice ours: it closes with 1006, not 1009. Frames
    // between the two are closed by the message handlers with 1009 (RFC 6455 "message too big").
    maxPayloadLength: limits.maxPayloadBytes * 2,
    // The sweep closes a socket past WS_MAX_BACKPRESSURE with 4001; uWS's limit is set at twice
    // that so the close frame still fits behind the backlog, and past it uWS drops messages
    // for the socket (it never closes it silently): memory stays bounded either way.
    maxBackpressure: limits.maxBackpressure * 2,
    closeOnBackpressureLimit: 0
  }
}

/** Why a socket closed, for the metrics: our reason if we closed it, else what the code says. */
export function closeReasonOf (data: SocketData, code: number, message = ''): string {
  if (data.closedBy !== null) return data.closedBy
  // uWS's own hard limit (twice ours) closes with 1006 and this text.
  if (code === CLOSE_CODES.message_too_big.code || /too big message/i.test(message)) return 'message_too_big'
  return code === 1000 || code === 1001 ? 'client' : 'dropped'
}

export interface SocketRegistry {
  start: () => void
  stop: () => void
  add: (ws: WebSocket<SocketData>) => void
  remove: (ws: WebSocket<SocketData>) => void
  count: (endpoint?: Endpoint) => number
  /** Open sockets of one user, both endpoints. */
  countForUser: (userId: string) => number
  /** Closes a socket with one of our codes (no-op once it is closed). */
  close: (ws: WebSocket<SocketData>, reason: CloseReason) => void
  closeAll: (reason: CloseReason) => number
}

export interface SocketRegistryOptions {
  clock: Clock
  maxBackpressure: number
  /** How often each socket is pinged (pingIntervalMs(WS_IDLE_TIMEOUT_S)). */
  pingIntervalMs: number
  sweepMs?: number
}

export function createSocketRegistry (options: SocketRegistryOptions): SocketRegistry {
  const sockets = { hints: new Set<WebSocket<SocketData>>(), chat: new Set<WebSocket<SocketData>>() }
  const perUser = new Map<string, number>()
  let timer: unknown = null
  const sweepMs = options.sweepMs ?? 1000
  const pings = createPingWheel<WebSocket<SocketData>>({
    clock: options.clock,
    intervalMs: options.pingIntervalMs,
    ping (ws) {
      // Closing (ours, awaiting the peer's close frame) or closed: nothing more to say to it.
      const data = ws.getUserData()
      if (!data.closed && data.closedBy === null) ws.ping()
    }
  })

  function close (ws: WebSocket<SocketData>, reason: CloseReason): void {
    const data = ws.getUserData()
    if (data.closed || data.closedBy !== null) return
    data.closedBy = reason
    const { code, reason: text } = CLOSE_CODES[reason]
    // Called from timers (the sweep) and from shutdown, outside any uWS callback: corked, as
    // uWS requires for writes made there.
    ws.cork(() => { ws.end(code, text) })
  }

  function sweep (): void {
    timer = options.clock.setTimeout(sweep, sweepMs)
    const nowS = options.clock.now() / 1000
    for (const set of Object.values(sockets)) {
      for (const ws of set) {
        if (ws.getBufferedAmount() > options.maxBackpressure) close(ws, 'slow_consumer')
        else {
          const { expiresAt } = ws.getUserData()
          if (expiresAt !== 0 && expiresAt <= nowS) close(ws, 'token_expired')
        }
      }
    }
  }

  return {
    start () {
      if (timer === null) timer = options.clock.setTimeout(sweep, sweepMs)
      pings.start()
    },
    stop () {
      if (timer !== null) options.clock.clearTimeout(timer)
      timer = null
      pings.stop()
    },
    add (ws) {
      const data = ws.getUserData()
      const set = sockets[data.endpoint]
      if (set.has(ws)) return
      set.add(ws)
      perUser.set(data.userId, (perUser.get(data.userId) ?? 0) + 1)
      pings.add(ws)
    },
    remove (ws) {
      const data = ws.getUserData()
      if (!sockets[data.endpoint].delete(ws)) return
      const n = perUser.get(data.userId) ?? 0
      if (n <= 1) perUser.delete(data.userId)
      else perUser.set(data.userId, n - 1)
      pings.remove(ws)
    },
    countForUser: (userId) => perUser.get(userId) ?? 0,
    count (endpoint) { return endpoint === undefined ? sockets.hints.size + sockets.chat.size : sockets[endpoint].size },
    close,
    closeAll (reason) {
      const all = [...sockets.hints, ...sockets.chat]
      for (const ws of all) close(ws, reason)
      return all.length
    }
  }
}
