/**
 * The composition root: builds every part from the config, wires events to metrics, and
 * owns the order of start-up and shutdown. Nothing runs until start(); stop() undoes it all.
 */
import { mkdirSync } from 'node:fs'
import { createPasswords } from './auth/password.js'
import { createRateLimiter } from './auth/rate-limiter.js'
import { resolveAuthSecret } from './auth/secret.js'
import { createTokens } from './auth/tokens.js'
import { createChatService, type ChatService } from './chat/chat-service.js'
import { createPendingRegistry, type PendingRegistry } from './chat/pending-registry.js'
import { systemClock, type Clock } from './clock.js'
import type { Config } from './config.js'
import { openDatabase, type Database } from './db/database.js'
import { TetherError } from './errors.js'
import { createLagMonitor } from './event-loop-lag.js'
import type { HealthSources } from './health.js'
import { createClientAddress } from './http/client-address.js'
import { redactUrl } from './redact.js'
import { createCors } from './http/cors.js'
import type { ExchangeHooks } from './http/exchange.js'
import { loginHandler, meHandler, registerHandler } from './http/routes/auth.js'
import { relayChats, storedChats } from './chat/chat-persistence.js'
import { createContentScreen } from './chat/content-screen.js'
import { createHistoryTrimmer } from './chat/history-trimmer.js'
import { CHAT_ROUTE, chatMessagesHandler } from './http/routes/chat-messages.js'
import { createSessionHandler, listSessionsHandler, sessionMessagesHandler } from './http/routes/sessions.js'
import { healthHandler, livezHandler, mqttHealthHandler, readyzHandler } from './http/routes/health.js'
import { metricsHandler } from './http/routes/metrics.js'
import { statusRoutes } from './http/routes/status-page.js'
import { createHttpServer, type HttpServer } from './http/server.js'
import type { Logger } from './log.js'
import { silentLogger } from './log.js'
import { createMetrics, type Metrics } from './metrics.js'
import { startDemoResponder, type DemoResponder } from './mqtt/demo-responder.js'
import { startEmbeddedBroker, type EmbeddedBroker } from './mqtt/embedded-broker.js'
import { BROKER_USERS } from './mqtt/broker-acl.js'
import { loadBrokerCredentials } from './mqtt/broker-credentials.js'
import { createMqttLink, type MqttLink } from './mqtt/mqtt-link.js'
import { createTopics } from './mqtt/topics.js'
import { linkTimings } from './settings/mqtt-link-settings.js'
import { createWatchdog, type Watchdog } from './watchdog/watchdog.js'
import { BLOCK_LOOP_ROUTE, blockEventLoopHandler } from './http/routes/test-hooks.js'
import { createThreadPool, type ThreadPool } from './threads/thread-pool.js'
import { CHAT_WS_ROUTE, chatSocket } from './ws/chat-socket.js'
import { createHintHub } from './ws/hint-hub.js'
import { HINTS_ROUTE, hintsSocket } from './ws/hints-socket.js'
import { pingIntervalMs } from './ws/ping-wheel.js'
import { createSessionOwners } from './chat/session-owners.js'
import { createSocketRegistry, type SocketRegistry } from './ws/socket-registry.js'
import type { UpgradeDeps } from './ws/upgrade.js'

/** Each pending-request cap under its name in tether_limits_refused_total. */
const CAP_LIMITS = { total_cap: 'pending_total', session_cap: 'pending_session', user_cap: 'pending_user' } as const

export interface TetherDeps {
  log?: Logger
  clock?: Clock
  random?: () => number
}

export interface Tether {
  start: () => Promise<void>
  /** Graceful: refuse new chats, let in-flight ones finish within SHUTDOWN_GRACE_MS, then close. */
  stop: () => Promise<void>
  /** The bound HTTP port (useful with PORT=0). */
  readonly port: number
  /** The broker actually used (the embedded one's URL when MQTT_URL is unset). */
  readonly mqttUrl: string
  readonly link: MqttLink
  readonly pending: PendingRegistry
  readonly metrics: Metrics
  readonly database: Database
}

interface Running {
  watchdog: Watchdog
  sockets: SocketRegistry
  database: Database
  workers: ThreadPool
  broker: EmbeddedBroker | null
  metrics: Metrics
  registry: PendingRegistry
  link: MqttLink
  chat: ChatService
  demo: DemoResponder | null
  http: HttpServer
  lag: ReturnType<typeof createLagMonitor>
  port: number
  url: string
}

export function createTether (config: Config, deps: TetherDeps = {}): Tether {
  const log = deps.log ?? silentLogger()
  const clock = deps.clock ?? systemClock
  const topics = createTopics(config.mqttTopicPrefix, config.instanceId)
  let running: Running | null = null
  // What the last start() built: still readable after stop(), for tests and final reports.
  let last: Running | null = null
  let shuttingDown = false
  let stopping: Promise<void> | null = null

  function need (): Running {
    if (last === null) throw new Error('tether has not been started')
    return last
  }

  async function startBroker (): Promise<EmbeddedBroker> {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o755 })
    const { credentials, file } = loadBrokerCredentials(config.dataDir)
    log.info({ credentials_file: file }, `embedded MQTT broker accounts (${BROKER_USERS.gateway}, ${BROKER_USERS.worker}) are in ${file}`)
    return await startEmbeddedBroker({ port: config.embeddedMqttPort, log, credentials, topicPrefix: config.mqttTopicPrefix, gatewayClientId: config.instanceId })
  }

  async function start (): Promise<void> {
    if (running !== null) return
    const startedAt = clock.now()
    const broker = config.mqttUrl === undefined ? await startBroker() : null
    const url = config.mqttUrl ?? (broker as EmbeddedBroker).gatewayUrl
    const metrics = createMetrics()
    const database = await openDatabase({
      url: config.databaseUrl,
      dataDir: config.dataDir,
      embeddedPort: config.embeddedPgPort,
      poolSize: config.dbPoolSize,
      acquireTimeoutMs: config.dbAcquireTimeoutMs,
      statementTimeoutMs: config.dbStatementTimeoutMs,
      idleInTxTimeoutMs: config.dbIdleInTxTimeoutMs,
      healthIntervalMs: config.dbHealthIntervalMs,
      clock,
      log,
      onAcquire: metrics.dbAcquired
    })
    const workers = createThreadPool({
      threads: config.threads,
      maxQueue: config.threadMaxQueue,
      niceIncrement: config.threadNice,
      defaultTimeoutMs: config.threadTaskTimeoutMs,
      inline: config.threadInline,
      log,
      clock
    })
    const tokens = createTokens({
      secret: resolveAuthSecret({ configured: config.authSecret, dataDir: config.dataDir, log }),
      ttlS: config.authTokenTtlS,
      clock
    })
    const limiter = createRateLimiter({ capacity: config.loginMaxFailures, clock })
    const registrations = createRateLimiter({ capacity: config.registerPerAddressPerHour, windowMs: 3_600_000, clock })
    const creations = createRateLimiter({ capacity: config.sessionCreatePerMinute, windowMs: 60_000, clock })
    // Registrations hash a few at a time, waiting included: the pool's queue is first in,
    // first out, so a login must never find more than a few hashes (0.3 s each at N = 2^17)
    // ahead of it, whatever a registration flood sends.
    const passwords = createPasswords(workers, {
      timeoutMs: config.threadTaskTimeoutMs,
      cost: config.passwordHashCost,
      maxHashing: config.registerMaxConcurrent === 0 ? 2 * config.threads : config.registerMaxConcurrent,
      onHashRefused: () => { metrics.limitRefused('register_share') }
    })
    // Routes that need the schema wait for it: before the first successful migration they
    // answer 503 db_unavailable instead of failing on a missing table.
    // While the database is known to be down, fail fast (the probe notices its return)
    // rather than make every request wait out the acquire timeout, or hash a password first.
    const migrated = <T>(get: () => T) => (): T => {
      if (!database.ready) throw new TetherError('db_unavailable', 'The database has not been reachable since start-up.', 1)
      if (database.monitor.status === 'down') throw new TetherError('db_unavailable', undefined, 1)
      return get()
    }
    const accounts = migrated(() => database.accounts)
    const chats = migrated(() => database.chats)
    const registry = createPendingRegistry({
      maxPending: config.maxPending,
      maxPendingPerSession: config.maxPendingPerSession,
      maxPendingPerUser: config.maxPendingPerUser,
      clock,
      onSettled: metrics.chatSettled,
      onCallbackError: (err, where) => { log.error({ where, err: err instanceof Error ? err.stack : String(err) }, 'pending-request callback threw') }
    })
    const link = createMqttLink({
      url,
      clientId: config.instanceId,
      probeTopic: topics.probe,
      ...linkTimings(config),
      staleAfterMs: config.mqttStaleAfterMs,
      clock,
      log,
      ...(deps.random !== undefined ? { random: deps.random } : {}),
      inFlightSince: registry.inFlightSince,
      onHandlerError: () => { metrics.handlerError('mqtt_message') }
    })
    link.events.on('transition', (t) => { metrics.linkTransition(t.from, t.to) })
    link.events.on('attempt', metrics.connectAttempt)
    const chat = createChatService({
      link, registry, topics, clock, log,
      chatTimeoutMs: config.chatTimeoutMs,
      onReplyDropped: metrics.replyDropped,
      onCapRefused: (cap) => { metrics.limitRefused(CAP_LIMITS[cap]) }
    })
    const lag = createLagMonitor({ clock, onSample: metrics.loopDelaySample })
    const sockets = createSocketRegistry({ clock, maxBackpressure: config.wsMaxBackpressure, pingIntervalMs: pingIntervalMs(config.wsIdleTimeoutS) })
    // The hub fans out through the uWS app, which exists only once the server is built below.
    let fanOut: (topic: string, message: string) => void = () => {}
    const hub = createHintHub({ link, topics, clock, maxBytes: config.hintMaxBytes, publish: (topic, message) => { fanOut(topic, message) }, onHint: metrics.hintPublished, onDropped: metrics.hintDropped })
    metrics.setSources({
      lagP99Seconds: () => lag.p99Ms() / 1000,
      wsConnections: (endpoint) => sockets.count(endpoint),
      hintSessions: () => hub.sessions,
      dbUp: () => database.monitor.status === 'up',
      dbPool: database.stats,
      linkState: () => link.state,
      lastActivityAt: () => link.lastActivityAt,
      reconnectAttempts: () => link.attempts,
      pendingRequests: () => registry.size,
      now: clock.now
    })

    const cors = createCors(config.corsOrigins)
    let noteRoute: (route: string) => void = () => {}
    const hooks: ExchangeHooks = {
      onResponse: metrics.httpResponse,
      corsHeaders: cors.headersFor,
      closing: () => shuttingDown,
      onRequest: (route) => { noteRoute(route) }
    }
    const sources: HealthSources = {
      now: clock.now,
      startedAt,
      link,
      pendingTotal: () => registry.size,
      pendingBySession: registry.bySession,
      lagP99Ms: lag.p99Ms,
      lagDegradedMs: config.lagDegradedMs,
      memory: () => { const m = process.memoryUsage(); return { rss: m.rss, heapUsed: m.heapUsed } },
      memorySoftLimitBytes: config.memorySoftLimitBytes,
      shuttingDown: () => shuttingDown,
      subscribers: () => ({ hint_sessions: hub.sessions, total_websockets: sockets.count() }),
      db: () => ({
        status: !database.ready ? 'migrating' : database.monitor.status,
        downSince: database.monitor.downSince,
        pool: database.stats()
      })
    }
    const routeDeps = { hooks, log, tokens, maxBodyBytes: config.maxBodyBytes, clientAddress: createClientAddress(config.trustProxy) }
    if (config.chatMode === 'relay') log.warn('CHAT_MODE=relay: chats are NOT authenticated and NOT stored; use only on a trusted network')
    const authDeps = { ...routeDeps, accounts, passwords, limiter, registrations, onLimited: metrics.limitRefused }
    const owners = createSessionOwners()
    const sessionDeps = { ...routeDeps, chats, owners, creations, onLimited: metrics.limitRefused }
    const persistence = config.chatMode === 'relay' ? relayChats : storedChats(chats, owners, config.historyMaxMessages, config.historyMaxChars, createHistoryTrimmer(workers, { maxTokens: config.historyMaxTokens, log }))
    // Spread into both chat transports, whose deps reach runChat whole (no thread hop without filters).
    const screening = config.contentFilters.length === 0 ? {} : { screen: createContentScreen(workers, { patterns: config.contentFilters, timeoutMs: config.contentFilterTimeoutMs, log }) }
    const retryAfterS = link.retryAfterS
    const upgradeDeps = (endpoint: 'hints' | 'chat'): UpgradeDeps => ({
      hooks,
      log,
      tokens,
      requiresAuth: persistence.requiresAuth,
      onRefused: (status) => { metrics.wsRefused(endpoint, status) },
      perUser: { count: sockets.countForUser, max: config.wsMaxPerUser, onLimited: () => { metrics.limitRefused('ws_user') } }
    })
    const wsLimits = { idleTimeoutS: config.wsIdleTimeoutS, maxPayloadBytes: config.wsMaxPayloadBytes, maxBackpressure: config.wsMaxBackpressure }
    const http = createHttpServer({
      hooks,
      preflightHeaders: cors.preflight,
      log,
      onSocketHandlerError: metrics.handlerError,
      sockets: [
        {
          pattern: HINTS_ROUTE,
          onThrow: (ws) => { sockets.close(ws, 'internal_error') },
          behavior: hintsSocket({
            ...wsLimits,
            upgrade: upgradeDeps('hints'),
            ownsSession: async (userId, sessionId) => await chats().ownsSession(userId, sessionId),
            owners,
            holdUser: chat.holdUser,
            registry: sockets, hub, link, topics, clock, log,
            statePerSecond: config.wsStatePerSecond,
            stateBurst: config.wsStateBurst,
            onOpen: () => { metrics.wsOpened('hints') },
            onClose: (reason) => { metrics.wsClosed('hints', reason) },
            onRejected: (reason) => { metrics.wsFrameRejected('hints', reason) },
            onState: metrics.statePublished
          })
        },
        {
          pattern: CHAT_WS_ROUTE,
          onThrow: (ws) => { sockets.close(ws, 'internal_error') },
          behavior: chatSocket({
            ...wsLimits,
            upgrade: upgradeDeps('chat'),
            registry: sockets, chat, persistence, retryAfterS, clock, log, ...screening,
            onOpen: () => { metrics.wsOpened('chat') },
            onClose: (reason) => { metrics.wsClosed('chat', reason) },
            onRejected: (reason) => { metrics.wsFrameRejected('chat', reason) }
          })
        }
      ],
      routes: [
        {
          method: 'post',
          path: CHAT_ROUTE,
          handler: chatMessagesHandler({ ...routeDeps, chat, persistence, retryAfterS, ...screening, sse: { maxBackpressure: config.sseMaxBackpressure, onSlowConsumer: metrics.sseSlowConsumer } })
        },
        { method: 'post', path: '/api/auth/register', handler: registerHandler(authDeps) },
        { method: 'post', path: '/api/auth/login', handler: loginHandler(authDeps) },
        { method: 'get', path: '/api/auth/me', handler: meHandler(authDeps) },
        { method: 'post', path: '/api/chatbot/sessions', handler: createSessionHandler(sessionDeps) },
        { method: 'get', path: '/api/chatbot/sessions', handler: listSessionsHandler(sessionDeps) },
        { method: 'get', path: '/api/chatbot/sessions/:id/messages', handler: sessionMessagesHandler(sessionDeps) },
        { method: 'get', path: '/api/health', handler: healthHandler(hooks, sources) },
        { method: 'get', path: '/api/health/mqtt', handler: mqttHealthHandler(hooks, sources, { tokens, owners }) },
        { method: 'get', path: '/livez', handler: livezHandler(hooks) },
        { method: 'get', path: '/readyz', handler: readyzHandler(hooks, sources) },
        { method: 'get', path: '/metrics', handler: metricsHandler(hooks, metrics.registry, log) },
        ...statusRoutes({ hooks, sources, registry: metrics.registry, log }),
        ...(config.testHooks ? [{ method: 'post' as const, path: BLOCK_LOOP_ROUTE, handler: blockEventLoopHandler(hooks, log) }] : [])
      ]
    })
    const watchdog = createWatchdog({
      stallMs: config.watchdogStallMs,
      exitOnStall: config.watchdogExit,
      routes: http.routeNames,
      clock,
      log,
      pendingRequests: () => registry.size,
      websockets: () => sockets.count(),
      onStall: metrics.watchdogStall
    })
    noteRoute = watchdog.noteRoute

    fanOut = http.publish
    watchdog.start()
    lag.start()
    sockets.start()
    workers.start()
    chat.start()
    link.start()
    const demo = config.demoResponder
      ? startDemoResponder({ ...linkTimings(config), url: broker?.workerUrl ?? url, topics, clientId: `${config.instanceId}-demo`, clock, log })
      : null
    let port: number
    try {
      port = await http.listen(config.host, config.port)
    } catch (err) {
      await link.stop()
      await demo?.stop()
      await broker?.close()
      await workers.stop()
      await database.close()
      sockets.stop()
      lag.stop()
      await watchdog.stop()
      throw err
    }
    running = { watchdog, sockets, database, workers, broker, metrics, registry, link, chat, demo, http, lag, port, url }
    last = running
    log.info({ port, host: config.host, mqtt: redactUrl(url), instance_id: config.instanceId, demo_responder: demo !== null }, `tether listening on http://${config.host}:${port}`)
  }

  async function shutdown (): Promise<void> {
    const r = running
    if (r === null) return
    shuttingDown = true
    r.chat.refuseNew()
    // Sockets first, with a "reconnect" code: their clients move to another instance now
    // (their chats in flight are cancelled), while HTTP chats get the grace period.
    const closedSockets = r.sockets.closeAll('shutting_down')
    r.sockets.stop()
    log.info({ pending: r.registry.size, sockets_closed: closedSockets, grace_ms: config.shutdownGraceMs }, 'shutting down: draining in-flight chats')
    if (r.registry.size > 0) {
      let timer: unknown
      await Promise.race([
        r.registry.whenEmpty(),
        new Promise<void>((resolve) => { timer = clock.setTimeout(resolve, config.shutdownGraceMs) })
      ])
      clock.clearTimeout(timer)
    }
    const failed = r.registry.failAll('shutdown')
    if (failed > 0) log.warn({ failed }, 'shutdown grace over: remaining chats answered 503')
    r.http.close()
    r.chat.stop()
    await r.link.stop()
    await r.demo?.stop()
    await r.broker?.close()
    await r.workers.stop()
    await r.database.close()
    r.lag.stop()
    await r.watchdog.stop()
    running = null
    log.info('shutdown complete')
  }

  return {
    start,
    stop () {
      stopping ??= shutdown()
      return stopping
    },
    get port () { return need().port },
    get mqttUrl () { return need().url },
    get link () { return need().link },
    get pending () { return need().registry },
    get metrics () { return need().metrics },
    get database () { return need().database }
  }
}
