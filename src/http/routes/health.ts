/** /api/health, /api/health/mqtt, /api/health/workers, /livez, /readyz: cheap, synchronous, never touching the broker. */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { carriesChats } from '../../../machines/mqtt-link.machine.js'
import { computeHealth, computeMqttHealth, computeWorkersHealth } from '../../health.js'
import type { RuntimeView } from '../../runtime-view.js'
import type { ClusterView } from '../../cluster/gateway-presence.js'
import type { Tokens } from '../../auth/tokens.js'
import type { SessionOwners } from '../../chat/session-owners.js'
import { TetherError } from '../../errors.js'
import { openExchange, sendJson, type ExchangeHooks } from '../exchange.js'
import { authenticate } from '../request-context.js'
import { ROUTES } from '../route-table.js'

type Handler = (res: HttpResponse, req: HttpRequest) => void

export function healthHandler (hooks: ExchangeHooks, sources: RuntimeView): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.health.path)
    const report = computeHealth(sources)
    sendJson(hooks, ex, report.httpStatus, report.body)
  }
}

/** Who may see which session ids in /api/health/mqtt: a valid token's user, their own sessions. */
export interface SessionViewer {
  tokens: Tokens
  owners: Pick<SessionOwners, 'owns'>
}

export function mqttHealthHandler (hooks: ExchangeHooks, sources: RuntimeView, viewer?: SessionViewer): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.mqttHealth.path)
    const user = viewer === undefined ? null : authenticate(viewer.tokens, req.getHeader('authorization'))
    const visible = user === null || user instanceof TetherError || viewer === undefined
      ? () => false
      : (sessionId: string) => viewer.owners.owns(user.userId, sessionId) === true
    sendJson(hooks, ex, 200, computeMqttHealth(sources, visible))
  }
}

/** The announced LLM workers, each with its state, capacity and chats in flight (contract v1.1). */
export function workersHealthHandler (hooks: ExchangeHooks, sources: RuntimeView): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.workersHealth.path)
    sendJson(hooks, ex, 200, computeWorkersHealth(sources))
  }
}

/** The live gateways of the cluster, this one included (contract v1.1, "Several gateways"). */
export function clusterHealthHandler (hooks: ExchangeHooks, view: () => ClusterView): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.clusterHealth.path)
    sendJson(hooks, ex, 200, view())
  }
}

/** Liveness: answers as long as the event loop does. Orchestrators restart on failure. */
export function livezHandler (hooks: ExchangeHooks): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.livez.path)
    sendJson(hooks, ex, 200, { status: 'alive' })
  }
}

/** Readiness: 503 while the broker link cannot carry a chat, the database is unusable, or shutting down. */
export function readyzHandler (hooks: ExchangeHooks, sources: RuntimeView): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.readyz.path)
    const { state } = sources.link
    const linkUsable = carriesChats(state)
    const db = sources.db().status
    const ready = linkUsable && db === 'up' && !sources.shuttingDown()
    sendJson(hooks, ex, ready ? 200 : 503, {
      status: ready ? 'ready' : 'not_ready',
      mqtt: state,
      db,
      shutting_down: sources.shuttingDown()
    })
  }
}
