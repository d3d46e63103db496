/**
 * `npm run worker`: the reference worker process. The only module of src/llm-worker that reads
 * the environment and installs signal handlers.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ConfigError, EXIT_CONFIG, loadWorkerConfig, unknownWorkerVariables, type WorkerConfig } from './config.js'

/** Failed reconnects before the link reports givingUp; it keeps retrying at the backoff cap. */
const MAX_RECONNECT_ATTEMPTS = 10
/** How long a probe of a silent link may take before it is rebuilt. */
const PROBE_TIMEOUT_MS = 2000

async function main (): Promise<void> {
  let config: WorkerConfig
  try {
    config = loadWorkerConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    throw err
  }
  // Loaded only now, so a bad configuration is reported at once, before MQTT, XState and pino load.
  const [{ systemClock }, { createLogger }, { createMqttLink }, { createOpenAiUpstream }, { createLlmWorker }, { createWorkerTopics }] = await Promise.all([
    import('../clock.js'),
    import('../log.js'),
    import('../mqtt/mqtt-link.js'),
    import('./openai-stream.js'),
    import('./worker.js'),
    import('./worker-topics.js')
  ])
  const log = createLogger(config.logLevel).child({ component: 'llm-worker', worker_id: config.workerId })
  for (const name of unknownWorkerVariables(process.env)) {
    log.warn({ variable: name }, `unknown environment variable ${name} (a typo?) is ignored`)
  }

  const topics = createWorkerTopics(config.mqttTopicPrefix, config.workerId, config.workerSharedGroup)
  const link = createMqttLink({
    url: config.mqttUrl,
    clientId: config.workerId,
    probeTopic: topics.probe,
    keepaliveS: config.mqttKeepaliveS,
    // The worker waits for no replies, so only keepalive silence makes its link suspect.
    staleAfterMs: config.mqttKeepaliveS * 1000,
    probeTimeoutMs: PROBE_TIMEOUT_MS,
    connectTimeoutMs: config.mqttConnectTimeoutMs,
    maxReconnectAttempts: MAX_RECONNECT_ATTEMPTS,
    backoffBaseMs: config.mqttBackoffBaseMs,
    backoffCapMs: config.mqttBackoffCapMs,
    clock: systemClock,
    log,
    inFlightSince: () => null
  })
  const upstream = createOpenAiUpstream({
    baseUrl: config.llmBaseUrl,
    apiKey: config.llmApiKey,
    model: config.llmModel,
    systemPrompt: config.llmSystemPrompt,
    connectTimeoutMs: config.llmConnectTimeoutMs,
    clock: systemClock
  })
  const worker = createLlmWorker({
    link,
    topics,
    upstream,
    concurrency: config.workerConcurrency,
    queue: config.workerQueue,
    clock: systemClock,
    log
  })

  process.on('uncaughtException', (err) => {
    log.fatal({ err: err.stack ?? String(err) }, 'uncaught exception; exiting')
    process.exit(1)
  })
  process.on('unhandledRejection', (err) => {
    log.fatal({ err: err instanceof Error ? err.stack : String(err) }, 'unhandled rejection; exiting')
    process.exit(1)
  })

  let signalled = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) {
      log.warn({ signal }, 'second signal: exiting without waiting')
      process.exit(1)
    }
    signalled = true
    log.info({ signal, grace_ms: config.workerShutdownGraceMs }, 'signal received: graceful shutdown')
    worker.stop(config.workerShutdownGraceMs)
      .then(async () => { await link.stop() })
      .then(
        () => { log.info(worker.stats(), 'worker stopped'); process.exit(0) },
        (err: Error) => { log.fatal({ err: err.stack }, 'shutdown failed'); process.exit(1) }
      )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  link.events.on('up', () => {
    log.info({
      subscription: topics.subscription,
      model: config.llmModel,
      concurrency: config.workerConcurrency,
      queue: config.workerQueue
    }, 'worker ready: taking requests')
  })
  worker.start()
  link.start()
}

/**
 * True when this file is the process's entry point rather than an import (a test that imports
 * every module must not start a worker, and main() exits on a bad config).
 */
function isEntryPoint (): boolean {
  const script = process.argv[1]
  if (script === undefined) return false
  try { return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url)) } catch { return false }
}

if (isEntryPoint()) void main()
