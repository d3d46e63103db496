/**
 * The chat core: the pending-request registry, the MQTT link, the dispatcher that publishes
 * requests and routes replies, and the hint hub. Built here, started by the composition root
 * once the HTTP server exists (the hub fans out through it).
 */
import { createDispatcher, type Dispatcher } from '../chat/dispatcher.js'
import { createPendingRegistry, type PendingRegistry } from '../chat/pending-registry.js'
import { createStreamStore, type StreamStore } from '../chat/stream-store.js'
import { createGatewayPresence, gatewayWill, type GatewayPresence } from '../cluster/gateway-presence.js'
import { describeFailure } from '../failure.js'
import { createWorkerFleet, type WorkerFleet } from '../fleet/worker-fleet.js'
import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { createMqttLink, type MqttLink } from '../mqtt/mqtt-link.js'
import type { ResumeReply } from '../mqtt/protocol.js'
import type { Topics } from '../mqtt/topics.js'
import { linkTimings } from '../settings/mqtt-link-settings.js'
import { createHintHub, type HintHub } from '../ws/hint-hub.js'

/** Each pending-request cap under its name in tether_limits_refused_total. */
const CAP_LIMITS = { total_cap: 'pending_total', session_cap: 'pending_session', user_cap: 'pending_user' } as const

export interface ChatCore {
  registry: PendingRegistry
  link: MqttLink
  /** The announced LLM workers. */
  fleet: WorkerFleet
  /** The other gateways of the cluster, and this one's heartbeat. */
  cluster: GatewayPresence
  chat: Dispatcher
  /** Resumable streams' replay buffers (started and stopped with the dispatcher). */
  streams: StreamStore
  hub: HintHub
  /** Connects the hub to the server's native fan-out, once the server exists. */
  setFanOut: (publish: (topic: string, message: string) => void) => void
  /** Connects the stream resume (src/cluster/stream-resume.ts) to the replies it waits for, once it exists. */
  setResumeReplies: (handle: (reply: ResumeReply) => boolean) => void
}

export interface ChatCoreDeps {
  config: Config
  log: Logger
  clock: Clock
  metrics: Metrics
  topics: Topics
  /** The broker URL (the embedded one's when MQTT_URL is unset). */
  url: string
  random?: () => number
}

export function createChatCore ({ config, log, clock, metrics, topics, url, random }: ChatCoreDeps): ChatCore {
  const registry = createPendingRegistry({
    maxPending: config.maxPending,
    maxPendingPerSession: config.maxPendingPerSession,
    maxPendingPerUser: config.maxPendingPerUser,
    firstChunkTimeoutMs: config.chatFirstChunkTimeoutMs,
    idleTimeoutMs: config.chatIdleTimeoutMs,
    resumeGraceMs: config.streamResumeGraceMs,
    clock,
    // The dispatcher is built below, from the registry: bound late.
    // Cancel first: a metrics failure must not keep a worker generating.
    onSettled: (settlement) => {
      try { chat.settled(settlement) } finally { metrics.chatSettled(settlement) }
    },
    onCallbackError: (err, where) => { log.error({ where, err: err instanceof Error ? err.stack : String(err) }, 'pending-request callback threw') }
  })
  const link = createMqttLink({
    ...linkTimings(config),
    // The embedded broker (aedes) speaks 3.1.1 only and never answers a version 5 CONNECT.
    ...(config.mqttUrl === undefined ? { protocol: '3.1.1' as const } : {}),
    url,
    clientId: config.instanceId,
    probeTopic: topics.probe,
    staleAfterMs: config.mqttStaleAfterMs,
    clock,
    log,
    ...(random !== undefined ? { random } : {}),
    inFlightSince: registry.inFlightSince,
    onHandlerError: () => { metrics.handlerError('mqtt_message') },
    // Retained: it also replaces this gateway's retained heartbeat (gateway-presence.ts).
    will: gatewayWill(config.mqttTopicPrefix, config.instanceId)
  })
  link.events.on('transition', (t) => { metrics.linkTransition(t.from, t.to) })
  link.events.on('attempt', metrics.connectAttempt)
  const fleet = createWorkerFleet({
    link,
    topics,
    clock,
    log,
    maxWorkers: config.workerRegistryMax,
    forgetAfterMs: config.workerForgetMs,
    ...(random !== undefined ? { random } : {}),
    // The dispatcher is built below, from the fleet: bound late.
    onOffline: (workerId) => { chat.workerOffline(workerId) },
    onDropped: metrics.presenceDropped,
    onTransition: metrics.workerTransition
  })
  // The stream resume needs the chat path (storage), which is built after the core: bound late.
  let resumeReplies: (reply: ResumeReply) => boolean = () => false
  const cluster = createGatewayPresence({ link, prefix: config.mqttTopicPrefix, instanceId: config.instanceId, heartbeatMs: config.clusterHeartbeatMs, clock, log })
  const chat = createDispatcher({
    link, registry, topics, clock, log, fleet,
    presence: config.workerPresence,
    acceptTimeoutMs: config.chatAcceptTimeoutMs,
    onNoWorkers: metrics.noWorkers,
    onMoved: metrics.chatMoved,
    chatTimeoutMs: config.chatTimeoutMs,
    onReplyDropped: metrics.replyDropped,
    onCapRefused: (cap) => { metrics.limitRefused(CAP_LIMITS[cap]) },
    onCancelSent: metrics.cancelSent,
    onResumeReply: (reply) => resumeReplies(reply)
  })
  // The hub fans out through the uWS app, which exists only once the server is built.
  let fanOut: (topic: string, message: string) => void = () => {}
  const hub = createHintHub({ link, topics, clock, maxBytes: config.hintMaxBytes, publish: (topic, message) => { fanOut(topic, message) }, onHint: metrics.hintPublished, onDropped: metrics.hintDropped })
  const streams = createStreamStore({
    chats: chat,
    clock,
    retainMs: config.streamRetainMs,
    maxBytes: config.streamBufferMaxBytes,
    describe: (err, requestId) => describeFailure(err, log, { request_id: requestId }),
    onResume: metrics.streamResumed
  })
  return { registry, link, fleet, cluster, chat, streams, hub, setFanOut: (publish) => { fanOut = publish }, setResumeReplies: (handle) => { resumeReplies = handle } }
}
