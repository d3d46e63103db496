/**
 * The parts every other part stands on, started first and stopped last: the watchdog, the
 * event-loop lag monitor, the socket registry, the database, the thread pool and (without
 * MQTT_URL) the embedded broker. Each is pushed on the teardown stack as it starts.
 */
import { mkdirSync } from 'node:fs'
import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import { openDatabase, type Database } from '../db/database.js'
import { createLagMonitor } from '../event-loop-lag.js'
import { ROUTE_LABELS } from '../http/route-table.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { BROKER_USERS } from '../mqtt/broker-acl.js'
import { loadBrokerCredentials } from '../mqtt/broker-credentials.js'
import { startEmbeddedBroker, type EmbeddedBroker } from '../mqtt/embedded-broker.js'
import { createThreadPool, type ThreadPool } from '../threads/thread-pool.js'
import { createWatchdog, type Watchdog } from '../watchdog/watchdog.js'
import { pingIntervalMs } from '../ws/ping-wheel.js'
import { createSocketRegistry, type SocketRegistry } from '../ws/socket-registry.js'
import type { TeardownStack } from './teardown-stack.js'

export interface Foundations {
  watchdog: Watchdog
  lag: ReturnType<typeof createLagMonitor>
  sockets: SocketRegistry
  database: Database
  threads: ThreadPool
  /** The embedded broker, when MQTT_URL is unset. */
  broker: EmbeddedBroker | null
  /** The broker the gateway's link uses. */
  url: string
}

export interface FoundationsDeps {
  config: Config
  log: Logger
  clock: Clock
  metrics: Metrics
  stack: TeardownStack
  /** Chats in flight, for the watchdog's report (the registry is built later). */
  pendingRequests: () => number
}

async function startBroker (config: Config, log: Logger): Promise<EmbeddedBroker> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o755 })
  const { credentials, file } = loadBrokerCredentials(config.dataDir)
  log.info({ credentials_file: file }, `embedded MQTT broker accounts (${BROKER_USERS.gateway}, ${BROKER_USERS.worker}) are in ${file}`)
  return await startEmbeddedBroker({ port: config.embeddedMqttPort, log, credentials, topicPrefix: config.mqttTopicPrefix, gatewayClientId: config.instanceId })
}

export async function startFoundations ({ config, log, clock, metrics, stack, pendingRequests }: FoundationsDeps): Promise<Foundations> {
  const sockets = createSocketRegistry({ clock, maxBackpressure: config.wsMaxBackpressure, pingIntervalMs: pingIntervalMs(config.wsIdleTimeoutS) })
  // The watchdog starts first and stops last: a hang anywhere in between is reported.
  const watchdog = createWatchdog({
    stallMs: config.watchdogStallMs,
    exitOnStall: config.watchdogExit,
    routes: ROUTE_LABELS,
    clock,
    log,
    pendingRequests,
    websockets: () => sockets.count(),
    onStall: metrics.watchdogStall
  })
  watchdog.start()
  stack.push('watchdog', async () => { await watchdog.stop() })
  const lag = createLagMonitor({ clock, onSample: metrics.loopDelaySample })
  lag.start()
  stack.push('event-loop lag monitor', lag.stop)
  sockets.start()
  stack.push('socket registry', sockets.stop)

  const database = await openDatabase({
    url: config.databaseUrl,
    dataDir: config.dataDir,
    embeddedPort: config.embeddedPgPort,
    poolSize: config.dbPoolSize,
    acquireTimeoutMs: config.dbAcquireTimeoutMs,
    statementTimeoutMs: config.dbStatementTimeoutMs,
    idleInTxTimeoutMs: config.dbIdleInTxTimeoutMs,
    healthIntervalMs: config.dbHealthIntervalMs,
    writeBatchMax: config.dbWriteBatchMax,
    writeQueueMax: config.dbWriteQueueMax,
    historyMax: config.historyMaxMessages,
    historyCacheMaxBytes: config.historyCacheMaxBytes,
    onHistory: metrics.historyLookup,
    onWritesUndone: metrics.dbWritesUndone,
    clock,
    log,
    onAcquire: metrics.dbAcquired,
    onWriteBatch: metrics.dbWriteBatch,
    onWriteSplit: metrics.dbWriteSplit,
    onWriteRefused: () => { metrics.limitRefused('db_write_queue') }
  })
  stack.push('database', database.close)
  const threads = createThreadPool({
    threads: config.threads,
    maxQueue: config.threadMaxQueue,
    niceIncrement: config.threadNice,
    defaultTimeoutMs: config.threadTaskTimeoutMs,
    inline: config.threadInline,
    log,
    clock
  })
  threads.start()
  stack.push('thread pool', threads.stop)
  const broker = config.mqttUrl === undefined ? await startBroker(config, log) : null
  if (broker !== null) stack.push('embedded broker', broker.close)
  const url = config.mqttUrl ?? (broker as EmbeddedBroker).gatewayUrl
  return { watchdog, lag, sockets, database, threads, broker, url }
}
