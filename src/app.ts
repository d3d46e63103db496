/**
 * The composition root: builds every part from the config, wires events to metrics, and owns
 * the order of start-up and shutdown. Nothing runs until start(). Each part is pushed on a
 * teardown stack as it starts, so stop() and a start that failed half-way undo the same
 * things in the same (reverse) order. The pieces live in src/app/: the route list
 * (http-routes.ts), the runtime view (runtime.ts) and the stack (teardown-stack.ts).
 */
import { createPasswords } from './auth/password.js'
import { createLoginThrottle } from './auth/login-throttle.js'
import { createRateLimiter, DEFAULT_WINDOW_MS } from './auth/rate-limiter.js'
import { resolveAuthSecret } from './auth/secret.js'
import { createTokens } from './auth/tokens.js'
import { createChatCore } from './app/chat-core.js'
import { startFoundations } from './app/foundations.js'
import { httpRoutes } from './app/http-routes.js'
import { createRuntimeView } from './app/runtime.js'
import { createTeardownStack, type TeardownStack } from './app/teardown-stack.js'
import { relayChats, storedChats } from './chat/chat-persistence.js'
import { createContentScreen } from './chat/content-screen.js'
import { createHistoryTrimmer } from './chat/history-trimmer.js'
import type { PendingRegistry } from './chat/pending-registry.js'
import { adoptChat } from './chat/run-chat.js'
import { createSessionOwners } from './chat/session-owners.js'
import { systemClock, type Clock } from './clock.js'
import type { Config } from './config.js'
import type { Database } from './db/database.js'
import { TetherError } from './errors.js'
import { createClientAddress } from './http/client-address.js'
import { createCors } from './http/cors.js'
import type { ExchangeHooks } from './http/exchange.js'
import { createHttpServer } from './http/server.js'
import { silentLogger, type Logger } from './log.js'
import { createMetrics, type Metrics } from './metrics.js'
import { startDemoResponder } from './mqtt/demo-responder.js'
import type { MqttLink } from './mqtt/mqtt-link.js'
import { claimInstanceId } from './cluster/instance-claim.js'
import { createStreamResume, type FindRequest } from './cluster/stream-resume.js'
import { splitMqttUrls } from './settings/parsers.js'
import { createTopics } from './mqtt/topics.js'
import { redactUrl } from './redact.js'
import type { SocketRegistry } from './ws/socket-registry.js'

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

/** What a started gateway keeps beyond its teardown stack: the parts stop() drains. */
interface Running {
  stack: TeardownStack
  registry: PendingRegistry
  sockets: SocketRegistry
  refuseNewChats: () => void
  metrics: Metrics
  link: MqttLink
  database: Database
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

  /** Builds and starts every part, pushing each on `stack` as it starts. */
  async function build (stack: TeardownStack): Promise<Running> {
    const startedAt = clock.now()
    const metrics = createMetrics()

    // The registry comes later; a stall reported before then finds no chats in flight.
    let chatsInFlight = (): number => 0
    const { watchdog, lag, sockets, database, threads, broker, url } = await startFoundations({ config, log, clock, metrics, stack, pendingRequests: () => chatsInFlight() })
    const tokens = createTokens({
      secret: resolveAuthSecret({ configured: config.authSecret, dataDir: config.dataDir, log }),
      ttlS: config.authTokenTtlS,
      clock
    })
    // Registrations hash a few at a time, waiting included: the pool's queue is first in,
    // first out, so a login must never find more than a few hashes (0.3 s each at N = 2^17)
    // ahead of it, whatever a registration flood sends.
    const passwords = createPasswords(threads, {
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
    const chats = migrated(() => database.chats)

    const core = createChatCore({ config, log, clock, metrics, topics, url, ...(deps.random !== undefined ? { random: deps.random } : {}) })
    const { registry, link, chat, hub, streams, fleet } = core
    chatsInFlight = () => registry.size
    const view = createRuntimeView({ config, now: clock.now, startedAt, link, registry, lagP99Ms: lag.p99Ms, sockets, hub, database, streams, fleet, cluster: core.cluster, shuttingDown: () => shuttingDown })
    metrics.setSources(view)

    if (config.chatMode === 'relay') log.warn('CHAT_MODE=relay: chats are NOT authenticated and NOT stored; use only on a trusted network')
    const owners = createSessionOwners()
    const persistence = config.chatMode === 'relay'
      ? relayChats
      : storedChats(chats, migrated(() => database.writes), owners, config.historyMaxMessages, config.historyMaxChars, createHistoryTrimmer(threads, { maxTokens: config.historyMaxTokens, log }))
    const cors = createCors(config.corsOrigins)
    const hooks: ExchangeHooks = {
      onResponse: metrics.httpResponse,
      corsHeaders: cors.headersFor,
      closing: () => shuttingDown,
      onRequest: watchdog.noteRoute
    }
    const chatPath = {
      retryAfterS: link.retryAfterS,
      onPartialLost: (err: unknown, requestId: string) => { log.warn({ request_id: requestId, err: err instanceof Error ? err.message : String(err) }, 'storing a partial answer failed') },
      // No thread hop at all when no filters are set.
      ...(config.contentFilters.length === 0 ? {} : { screen: createContentScreen(threads, { patterns: config.contentFilters, timeoutMs: config.contentFilterTimeoutMs, log }) })
    }
    const takeover = createStreamResume({
      link, topics, instanceId: config.instanceId, streams, chat, clock, log,
      adopt: (turn, worker, sink) => { adoptChat({ chat, persistence, ...chatPath }, turn, worker, sink) },
      handoverWaitMs: config.clusterHandoverWaitMs,
      takeoverTimeoutMs: config.streamTakeoverTimeoutMs,
      // A user may resume every stream they may have in flight, and no more.
      maxLookupsPerOwner: config.maxPendingPerUser,
      onTakeover: metrics.streamTakeover,
      onHandoff: metrics.streamHandoff
    })
    core.setResumeReplies(takeover.onReply)
    // A single gateway answers an unknown stream at once, as it always has: the cluster is asked
    // only while another gateway has been seen within the life of a stream (its deadline and
    // its retention after), and never with STREAM_TAKEOVER_TIMEOUT_MS=0.
    const peerWindowMs = config.chatTimeoutMs + config.streamRetainMs
    const remote = config.streamTakeoverTimeoutMs > 0
      ? { find: (request: FindRequest) => core.cluster.peersSeen(peerWindowMs) ? takeover.find(request) : null }
      : undefined
    const { routes, sockets: socketRoutes } = httpRoutes({
      config, hooks, log, clock, metrics, view, tokens, topics, link, hub, sockets, owners, chat, streams, persistence, passwords,
      cluster: core.cluster.view,
      clientAddress: createClientAddress(config.trustProxy),
      accounts: migrated(() => database.accounts),
      chats,
      loginThrottle: createLoginThrottle({
        local: createRateLimiter({ capacity: config.loginMaxFailures, clock }),
        // While the schema is missing or the database is down, this gateway's own count.
        store: () => database.ready && database.monitor.status !== 'down' ? database.loginThrottle : null,
        capacity: config.loginMaxFailures,
        windowMs: DEFAULT_WINDOW_MS,
        log
      }),
      registrations: createRateLimiter({ capacity: config.registerPerAddressPerHour, windowMs: 3_600_000, clock }),
      creations: createRateLimiter({ capacity: config.sessionCreatePerMinute, windowMs: 60_000, clock }),
      chatPath,
      remote,
      registry: metrics.registry
    })
    const http = createHttpServer({ hooks, preflightHeaders: cors.preflight, log, onSocketHandlerError: metrics.handlerError, routes, sockets: socketRoutes })
    core.setFanOut(http.publish)

    // Before the link takes INSTANCE_ID as its client id, which would knock a live gateway with
    // the same id off the broker.
    if (config.instanceIdSet && config.mqttUrl !== undefined) {
      await claimInstanceId({ url, prefix: config.mqttTopicPrefix, instanceId: config.instanceId, heartbeatMs: config.clusterHeartbeatMs, keepaliveS: config.mqttKeepaliveS, connectTimeoutMs: config.mqttConnectTimeoutMs, log })
    }
    link.start()
    stack.push('mqtt link', link.stop)
    core.cluster.start()
    stack.push('gateway presence', core.cluster.stop)
    // Subscribes to this gateway's reply topic; the link keeps it across reconnects.
    chat.start()
    stack.push('dispatcher', chat.stop)
    streams.start()
    stack.push('stream store', streams.stop)
    takeover.start()
    stack.push('stream takeover', takeover.stop)
    if (config.demoResponder) {
      const demo = startDemoResponder({ keepaliveS: config.mqttKeepaliveS, connectTimeoutMs: config.mqttConnectTimeoutMs, url: broker?.workerUrl ?? (splitMqttUrls(url)[0] as string), topics, clientId: `${config.instanceId}-demo`, clock, log })
      stack.push('demo responder', demo.stop)
    }
    const port = await http.listen(config.host, config.port)
    stack.push('http server', http.close)
    return { stack, registry, sockets, refuseNewChats: chat.refuseNew, metrics, link, database, port, url }
  }

  async function start (): Promise<void> {
    if (running !== null) return
    const stack = createTeardownStack(log)
    try {
      running = await build(stack)
    } catch (err) {
      await stack.unwind()
      throw err
    }
    last = running
    log.info({ port: running.port, host: config.host, mqtt: redactUrl(running.url), instance_id: config.instanceId, demo_responder: config.demoResponder }, `tether listening on http://${config.host}:${running.port}`)
  }

  async function shutdown (): Promise<void> {
    const r = running
    if (r === null) return
    shuttingDown = true
    r.refuseNewChats()
    // Sockets first, with a "reconnect" code: their clients move to another instance now
    // (their chats in flight are cancelled), while HTTP chats get the grace period.
    const closedSockets = r.sockets.closeAll('shutting_down')
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
    await r.stack.unwind()
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
