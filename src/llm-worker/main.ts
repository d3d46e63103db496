/**
 * `npm run worker`: the reference LLM worker process. The only module of src/llm-worker that
 * passes the environment on; entry-point.ts does the config, the process hooks and the signals.
 */
import { isEntryPoint, runService } from '../entry-point.js'
import { linkTimings } from '../settings/mqtt-link-settings.js'
import { WORKER_CONFIG } from './config.js'

if (isEntryPoint(import.meta.url)) {
  void runService({
    config: WORKER_CONFIG,
    env: process.env,
    logBindings: (config) => ({ component: 'llm-worker', worker_id: config.workerId }),
    async build (config, log) {
      // Loaded only now, so a bad configuration is reported at once, before MQTT and XState load.
      const [{ systemClock }, { createMqttLink }, { createOpenAiUpstream }, { createLlmWorker }, { createWorkerTopics }, { lastWill }] = await Promise.all([
        import('../clock.js'),
        import('../mqtt/mqtt-link.js'),
        import('./openai-stream.js'),
        import('./worker.js'),
        import('./worker-topics.js'),
        import('./presence.js')
      ])
      const topics = createWorkerTopics(config.mqttTopicPrefix, config.workerId, config.workerSharedGroup)
      const link = createMqttLink({
        ...linkTimings(config),
        url: config.mqttUrl,
        clientId: config.workerId,
        probeTopic: topics.probe,
        // The worker waits for no replies, so only keepalive silence makes its link suspect.
        staleAfterMs: config.mqttKeepaliveS * 1000,
        clock: systemClock,
        log,
        inFlightSince: () => null,
        // Set at every connect: if this process dies, the broker tells the gateways at once.
        ...(config.workerAnnounce ? { will: { topic: topics.presence, payload: lastWill(config.workerId), qos: 1 as const } } : {})
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
        log,
        ...(config.workerAnnounce ? { announce: { workerId: config.workerId, heartbeatMs: config.workerHeartbeatMs } } : {})
      })
      link.events.on('up', () => {
        log.info({
          subscription: topics.subscription,
          announced: config.workerAnnounce ? topics.presence : null,
          model: config.llmModel,
          concurrency: config.workerConcurrency,
          queue: config.workerQueue
        }, 'worker ready: taking requests')
      })
      return {
        start () { worker.start(); link.start() },
        async stop () {
          log.info({ grace_ms: config.workerShutdownGraceMs }, 'draining accepted requests')
          await worker.stop(config.workerShutdownGraceMs)
          await link.stop()
          log.info(worker.stats(), 'worker stopped')
        }
      }
    }
  })
}
