/**
 * `/api/mqtt/ws/hints/:session_id`: a browser's live view of one session. Hints published on
 * `llm/hints/<session_id>` arrive as `{"type":"hint",...}` frames; `{"type":"state","data":…}`
 * frames go to `llm/state/<session_id>` at QoS 0 (only `data`), rate-limited per socket.
 */
import type { WebSocket, WebSocketBehavior } from 'uWebSockets.js'
import { TetherError } from '../errors.js'
import { idRule, isValidId } from '../ids.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import type { Topics } from '../mqtt/topics.js'
import { parseFrame, takeToken, type Bucket, type FrameReason } from './frames.js'
import type { HintHub } from './hint-hub.js'
import type { SessionOwners } from '../chat/session-owners.js'
import { socketClosed, strike, tooBig, type EndpointDeps } from './endpoint.js'
import { socketLimits, type SocketData } from './socket-registry.js'
import { upgradeHandler } from './upgrade.js'
import { ROUTES } from '../http/route-table.js'

export interface HintSocketData extends SocketData {
  endpoint: 'hints'
  sessionId: string
  bucket: Bucket
  strikes: number
  lastErrorAt: number
}

export interface HintsSocketDeps extends EndpointDeps {
  ownsSession: (userId: string, sessionId: string) => Promise<boolean>
  /** Owners already known, so most upgrades need no database round trip (session-owners.ts). */
  owners?: SessionOwners
  /** Holds one of the user's places for an ownership lookup (chat.holdUser); throws 429 past the share. */
  holdUser?: (userId: string) => () => void
  hub: HintHub
  link: Pick<MqttLink, 'publish'>
  topics: Topics
  statePerSecond: number
  stateBurst: number
  onState?: () => void
}


export function hintsSocket (deps: HintsSocketDeps): WebSocketBehavior<HintSocketData> {
  const { clock } = deps

  function reject (ws: WebSocket<HintSocketData>, reason: FrameReason, message: string): void {
    if (strike(ws, deps, reason)) return
    const data = ws.getUserData()
    // At most one error frame a second: a flood must not be answered with a flood.
    const now = clock.now()
    if (now - data.lastErrorAt < 1000) return
    data.lastErrorAt = now
    ws.send(JSON.stringify({ type: 'error', error: reason, message }))
  }

  return {
    ...socketLimits(deps),
    upgrade: upgradeHandler<HintSocketData>(deps.upgrade, {
      route: ROUTES.hintsSocket.path,
      params: 1,
      precheck: ([sessionId]) => isValidId(sessionId) ? null : new TetherError('invalid_request', `${idRule('session_id')}.`),
      check ({ user, params }) {
        const sessionId = params[0] as string
        const data = (): HintSocketData => ({
          endpoint: 'hints',
          userId: user?.userId ?? sessionId,
          sessionId,
          expiresAt: user?.expiresAt ?? 0,
          closed: false,
          closedBy: null,
          bucket: { tokens: deps.stateBurst, at: clock.now() },
          strikes: 0,
          lastErrorAt: 0
        })
        if (user === null) return data()
        // Known owners answer at once (the upgrade then happens inside uWS's callback).
        const known = deps.owners?.owns(user.userId, sessionId)
        if (known === true) return data()
        if (known === false) throw new TetherError('session_not_found')
        // A database lookup holds one of the user's places while it runs (429 past the share),
        // so thousands of upgrades naming unknown sessions cost that user, not everyone the pool.
        const release = deps.holdUser?.(user.userId)
        return deps.ownsSession(user.userId, sessionId).then((owned) => {
          if (!owned) throw new TetherError('session_not_found')
          deps.owners?.remember(sessionId, user.userId)
          return data()
        }).finally(() => { release?.() })
      }
    }),
    open (ws) {
      deps.registry.add(ws)
      ws.subscribe(deps.hub.join(ws.getUserData().sessionId))
      deps.onOpen?.()
    },
    message (ws, message, isBinary) {
      if (tooBig(ws, deps, message)) return
      const parsed = parseFrame(message, isBinary, ['state'])
      if (!parsed.ok) { reject(ws, parsed.reason, parsed.message); return }
      const data = ws.getUserData()
      if (!takeToken(data.bucket, clock.now(), deps.statePerSecond, deps.stateBurst)) {
        reject(ws, 'rate_limited', `At most ${deps.statePerSecond} state frames per second.`)
        return
      }
      // Contract: only `data` is published; QoS 0, since state is superseded by the next one.
      const payload = JSON.stringify(parsed.frame.data ?? null)
      if (!deps.link.publish(deps.topics.state(data.sessionId), payload, 0)) {
        reject(ws, 'link_down', 'The model broker is not reachable; state not sent.')
        return
      }
      data.strikes = 0
      deps.onState?.()
    },
    close (ws, code, message) {
      socketClosed(ws, deps, code, message, (data) => { deps.hub.leave(data.sessionId) })
    }
  }
}
