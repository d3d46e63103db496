/**
 * Pairs every entry of the route table (src/http/route-table.ts) with its handler. The
 * handlers' dependencies arrive already built; nothing here starts anything.
 */
import type { Registry } from 'prom-client'
import type { Passwords } from '../auth/password.js'
import type { LoginThrottle } from '../auth/login-throttle.js'
import type { RateLimiter } from '../auth/rate-limiter.js'
import type { Tokens } from '../auth/tokens.js'
import type { Dispatcher } from '../chat/dispatcher.js'
import type { RemoteStreams } from '../cluster/stream-resume.js'
import type { StreamStore } from '../chat/stream-store.js'
import type { ChatPersistence } from '../chat/chat-persistence.js'
import type { SessionOwners } from '../chat/session-owners.js'
import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import type { Accounts } from '../db/accounts.js'
import type { ChatStore } from '../db/chat-store.js'
import type { ClientAddress } from '../http/client-address.js'
import type { ExchangeHooks } from '../http/exchange.js'
import { ROUTES } from '../http/route-table.js'
import { loginHandler, meHandler, registerHandler } from '../http/routes/auth.js'
import { chatMessagesHandler } from '../http/routes/chat-messages.js'
import type { ClusterView } from '../cluster/gateway-presence.js'
import { clusterHealthHandler, healthHandler, livezHandler, mqttHealthHandler, readyzHandler, workersHealthHandler } from '../http/routes/health.js'
import { metricsHandler } from '../http/routes/metrics.js'
import { createSessionHandler, listSessionsHandler, sessionMessagesHandler } from '../http/routes/sessions.js'
import { cancelChatHandler, resumeStreamHandler } from '../http/routes/streams.js'
import { statusApiHandler, statusPageHandler } from '../http/routes/status-page.js'
import { blockEventLoopHandler } from '../http/routes/test-hooks.js'
import type { Route, SocketRoute } from '../http/server.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import type { Topics } from '../mqtt/topics.js'
import type { RuntimeView } from '../runtime-view.js'
import { chatSocket } from '../ws/chat-socket.js'
import type { HintHub } from '../ws/hint-hub.js'
import { hintsSocket } from '../ws/hints-socket.js'
import type { SocketRegistry } from '../ws/socket-registry.js'
import type { UpgradeDeps } from '../ws/upgrade.js'
import type { RunChatDeps } from '../chat/run-chat.js'

export interface HttpRoutesDeps {
  config: Config
  hooks: ExchangeHooks
  log: Logger
  clock: Clock
  metrics: Metrics
  view: RuntimeView
  /** The live gateways of the cluster (/api/health/cluster). */
  cluster: () => ClusterView
  tokens: Tokens
  clientAddress: ClientAddress
  accounts: () => Accounts
  chats: () => ChatStore
  passwords: Passwords
  loginThrottle: LoginThrottle
  registrations: RateLimiter
  creations: RateLimiter
  owners: SessionOwners
  chat: Dispatcher
  streams: StreamStore
  /** Streams held by other gateways of the cluster (src/cluster/stream-resume.ts). */
  remote?: RemoteStreams
  persistence: ChatPersistence
  /** What runChat needs beyond the dispatcher: screening, Retry-After. */
  chatPath: Pick<RunChatDeps, 'retryAfterS' | 'screen' | 'onPartialLost'>
  link: MqttLink
  topics: Topics
  hub: HintHub
  sockets: SocketRegistry
  registry: Registry
}

export function httpRoutes (deps: HttpRoutesDeps): { routes: Route[], sockets: SocketRoute[] } {
  const { config, hooks, log, metrics, tokens } = deps
  const routeDeps = { hooks, log, tokens, maxBodyBytes: config.maxBodyBytes, clientAddress: deps.clientAddress }
  const authDeps = { ...routeDeps, accounts: deps.accounts, passwords: deps.passwords, loginThrottle: deps.loginThrottle, registrations: deps.registrations, onLimited: metrics.limitRefused }
  const sessionDeps = { ...routeDeps, chats: deps.chats, owners: deps.owners, creations: deps.creations, onLimited: metrics.limitRefused }
  const remote = deps.remote !== undefined ? { remote: deps.remote } : {}
  const chatDeps = { chat: deps.chat, persistence: deps.persistence, clock: deps.clock, streams: deps.streams, ...remote, ...deps.chatPath }
  const sse = { maxBackpressure: config.sseMaxBackpressure, onSlowConsumer: metrics.sseSlowConsumer }
  const streamDeps = { ...routeDeps, streams: deps.streams, ...remote, requiresAuth: deps.persistence.requiresAuth, sse }
  const statusDeps = { hooks, sources: deps.view, registry: deps.registry, log }

  const routes: Route[] = [
    { ...ROUTES.chatMessages, handler: chatMessagesHandler({ ...routeDeps, ...chatDeps, sse }) },
    { ...ROUTES.cancelChat, handler: cancelChatHandler(streamDeps) },
    { ...ROUTES.resumeStream, handler: resumeStreamHandler(streamDeps) },
    { ...ROUTES.register, handler: registerHandler(authDeps) },
    { ...ROUTES.login, handler: loginHandler(authDeps) },
    { ...ROUTES.me, handler: meHandler(authDeps) },
    { ...ROUTES.createSession, handler: createSessionHandler(sessionDeps) },
    { ...ROUTES.listSessions, handler: listSessionsHandler(sessionDeps) },
    { ...ROUTES.sessionMessages, handler: sessionMessagesHandler(sessionDeps) },
    { ...ROUTES.health, handler: healthHandler(hooks, deps.view) },
    { ...ROUTES.mqttHealth, handler: mqttHealthHandler(hooks, deps.view, { tokens, owners: deps.owners }) },
    { ...ROUTES.workersHealth, handler: workersHealthHandler(hooks, deps.view) },
    { ...ROUTES.clusterHealth, handler: clusterHealthHandler(hooks, deps.cluster) },
    { ...ROUTES.livez, handler: livezHandler(hooks) },
    { ...ROUTES.readyz, handler: readyzHandler(hooks, deps.view) },
    { ...ROUTES.metrics, handler: metricsHandler(hooks, deps.registry, log) },
    { ...ROUTES.statusPage, handler: statusPageHandler(hooks, ROUTES.statusPage.path) },
    { ...ROUTES.statusPageAlias, handler: statusPageHandler(hooks, ROUTES.statusPageAlias.path) },
    { ...ROUTES.statusApi, handler: statusApiHandler(statusDeps) },
    ...(config.testHooks ? [{ ...ROUTES.blockEventLoop, handler: blockEventLoopHandler(hooks, log) }] : [])
  ]

  const upgrade = (endpoint: 'hints' | 'chat'): UpgradeDeps => ({
    hooks,
    log,
    tokens,
    requiresAuth: deps.persistence.requiresAuth,
    onRefused: (status) => { metrics.wsRefused(endpoint, status) },
    perUser: { count: deps.sockets.countForUser, max: config.wsMaxPerUser, onLimited: () => { metrics.limitRefused('ws_user') } }
  })
  const wsLimits = { idleTimeoutS: config.wsIdleTimeoutS, maxPayloadBytes: config.wsMaxPayloadBytes, maxBackpressure: config.wsMaxBackpressure }
  const closeThrown = (ws: Parameters<NonNullable<SocketRoute['onThrow']>>[0]): void => { deps.sockets.close(ws, 'internal_error') }
  const sockets: SocketRoute[] = [
    {
      pattern: ROUTES.hintsSocket.path,
      onThrow: closeThrown,
      behavior: hintsSocket({
        ...wsLimits,
        upgrade: upgrade('hints'),
        ownsSession: async (userId, sessionId) => await deps.chats().ownsSession(userId, sessionId),
        owners: deps.owners,
        holdUser: deps.chat.holdUser,
        registry: deps.sockets,
        hub: deps.hub,
        link: deps.link,
        topics: deps.topics,
        clock: deps.clock,
        log,
        statePerSecond: config.wsStatePerSecond,
        stateBurst: config.wsStateBurst,
        onOpen: () => { metrics.wsOpened('hints') },
        onClose: (reason) => { metrics.wsClosed('hints', reason) },
        onRejected: (reason) => { metrics.wsFrameRejected('hints', reason) },
        onState: metrics.statePublished
      })
    },
    {
      pattern: ROUTES.chatSocket.path,
      onThrow: closeThrown,
      behavior: chatSocket({
        ...wsLimits,
        ...chatDeps,
        upgrade: upgrade('chat'),
        registry: deps.sockets,
        log,
        onOpen: () => { metrics.wsOpened('chat') },
        onClose: (reason) => { metrics.wsClosed('chat', reason) },
        onRejected: (reason) => { metrics.wsFrameRejected('chat', reason) }
      })
    }
  ]
  return { routes, sockets }
}
