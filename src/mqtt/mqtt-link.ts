/**
 * Drives the link statechart with a real mqtt.js client: fills the machine's slots with I/O,
 * turns client events into machine events, and keeps the subscription registry that is
 * restored on every (re)connect. Callers see `publish()` refuse while the link cannot carry
 * chats (carriesChats: not connected, and not stale while probed), which is what lets the chat
 * path answer 503 at once instead of queueing.
 */
import { EventEmitter } from 'node:events'
import type { MqttClient } from 'mqtt'
import { createActor, type Actor } from 'xstate'
import { carriesChats, linkStateName, mqttLinkMachine, type LinkStateName } from '../../machines/mqtt-link.machine.js'
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import type { MqttProtocol } from '../settings/mqtt-link-settings.js'
import { splitMqttUrls } from '../settings/parsers.js'
import { openClient } from './open-client.js'

export type QoS = 0 | 1

export interface LinkTransition {
  from: LinkStateName
  to: LinkStateName
  at: number
  reason: string | null
}

export interface MqttLinkOptions {
  /** One broker URL, or several comma-separated: the nodes of one cluster, tried in turn. */
  url: string
  clientId: string
  probeTopic: string
  /** MQTT_SUBSCRIBE_QOS: the highest QoS subscribed with, whatever a caller asks (0 on NATS). */
  subscribeQos?: 0 | 1
  keepaliveS: number
  staleAfterMs: number
  probeTimeoutMs: number
  connectTimeoutMs: number
  maxReconnectAttempts: number
  backoffBaseMs: number
  backoffCapMs: number
  /** MQTT_PROTOCOL; absent: 3.1.1. */
  protocol?: MqttProtocol
  clock: Clock
  log: Logger
  random?: () => number
  /** When the oldest request still waiting for a reply went out (epoch ms), or null if none. */
  inFlightSince: () => number | null
  /** A subscription's handler threw (it was caught and logged), for the metrics. */
  onHandlerError?: () => void
  /** The last will the broker publishes if this client vanishes (a worker's "offline"). */
  will?: LastWill
}

export interface LastWill {
  topic: string
  payload: string
  qos: QoS
  /** Retained: it replaces a retained presence message (a gateway's). */
  retain?: boolean
}

export interface MqttLink {
  start: () => void
  /** Clean DISCONNECT; resolves when the socket is closed (bounded by the connect timeout). */
  stop: () => Promise<void>
  /** False (and nothing queued) unless the link carries chats (carriesChats: connected or stale). */
  publish: (topic: string, payload: string | Buffer, qos: QoS, extra?: PublishExtra, retain?: boolean) => boolean
  /** The MQTT version of the current (or next) connection: 5 or 4 (3.1.1). */
  readonly protocolVersion: 4 | 5
  /**
   * Keeps `topic` (a filter) subscribed across reconnects. Messages are routed to `handler` by
   * their exact topic, which is `topic` itself unless `options.deliverAs` names another: a
   * shared subscription `$share/<group>/x` delivers messages as `x` (MQTT 5 4.8.2).
   */
  subscribe: (topic: string, qos: QoS, handler: (payload: Buffer, topic: string, retained?: boolean) => void, options?: SubscribeOptions) => void
  unsubscribe: (topic: string) => void
  /** A request went out on a link with nothing in flight: bring the staleness check forward. */
  wake: () => void
  readonly state: LinkStateName
  readonly isUp: boolean
  readonly attempts: number
  readonly maxAttempts: number
  readonly lastActivityAt: number
  /** Since when the link has not been usable (epoch ms), or null while it is. */
  readonly downSince: number | null
  readonly clientId: string
  /** The broker (host:port) of the current or next connection attempt: one of MQTT_URL's. */
  readonly broker: string
  /** Milliseconds until the next connection attempt, 0 when one is under way or the link is up. */
  nextAttemptInMs: () => number
  /** Retry-After for a chat refused or failed because of the link: whole seconds to the next attempt, at least 1 (RFC 9110 10.2.3). */
  retryAfterS: () => number
  readonly subscriptionCount: number
  recentTransitions: () => readonly LinkTransition[]
  readonly events: EventEmitter<LinkEvents>
}

/** MQTT 5 only; ignored on a 3.1.1 connection. */
export interface PublishExtra {
  properties?: { messageExpiryInterval?: number, responseTopic?: string, correlationData?: Buffer }
  /** QoS 1: the broker's PUBACK said 0x10, no matching subscribers (nobody got it). */
  onUnrouted?: () => void
}

export interface SubscribeOptions {
  /** The topic messages of this subscription arrive with, when it differs from the filter. */
  deliverAs?: string
  /**
   * For a filter ending in `/+`: messages arrive on many topics, all starting with this
   * (`<prefix>/workers/`). Matched only when no exact route does, so replies pay nothing.
   */
  deliverUnder?: string
  /**
   * A broker that refuses this one (an ACL from before it existed) costs only what it carries,
   * logged: it is subscribed on its own, and its refusal does not rebuild the link.
   */
  optional?: boolean
}

const HISTORY = 50

export interface LinkEvents {
  up: []
  down: [reason: string | null]
  transition: [LinkTransition]
  /** A connection attempt started (the first one included). */
  attempt: []
}

export function createMqttLink (options: MqttLinkOptions): MqttLink {
  const { clock, log } = options
  const keepaliveMs = options.keepaliveS * 1000
  const events = new EventEmitter<LinkEvents>()
  // Keyed by the subscribed filter (what is restored and unsubscribed)...
  const handlers = new Map<string, { qos: QoS, handler: (payload: Buffer, topic: string, retained?: boolean) => void, deliverAs: string, under: string | undefined, optional: boolean }>()
  // ...and by the topic messages arrive with (what incoming messages are matched against).
  const routes = new Map<string, (payload: Buffer, topic: string, retained?: boolean) => void>()
  // ...and the few wildcard ones, by the topic prefix their messages share.
  const prefixRoutes = new Map<string, (payload: Buffer, topic: string, retained?: boolean) => void>()
  const transitions: LinkTransition[] = []

  let client: MqttClient | null = null
  let generation = 0
  let lastInboundAt = clock.now()
  let downSince: number | null = clock.now()
  let nextAttemptAt = 0
  let state: LinkStateName = 'connecting'
  let closing: Promise<void> | null = null
  let actor: Actor<typeof mqttLinkMachine> | null = null
  // auto: 5, unless the broker refuses version 5 outright (then 3.1.1 for good), or an attempt
  // at 5 fails before CONNACK without saying why (aedes just never answers): then the next
  // attempt is 3.1.1, the one after 5 again, and a connection made at 3.1.1 that way is
  // followed by 5 again at the next reconnect, so a v5 broker that was merely restarting is
  // never demoted for good.
  const protocol = options.protocol ?? '3.1.1'
  let version: 4 | 5 = protocol === '3.1.1' ? 4 : 5
  let refusedFive = false
  let loggedVersion: 4 | 5 | null = null
  // Several URLs: the nodes of one cluster. A connection is only ever opened again because the
  // last one failed or was lost (a refused connect, a probe that timed out, a frozen node), so
  // each attempt after the first goes to the next node in turn: a dead node is not retried
  // while others are there.
  const urls = splitMqttUrls(options.url)
  let urlIndex = 0
  let attemptsOpened = 0
  const hostOf = (url: string): string => { const u = new URL(url); return `${u.hostname}:${u.port === '' ? '1883' : u.port}` }
  // Publishes waiting for a PUBACK that may say "no matching subscribers", by packet id.
  const unrouted = new Map<number, () => void>()
  // The current attempt's "lost" hook (MQTT_PROTOCOL=auto's version choice).
  let lostCurrent: (err: Error | null) => void = () => {}

  function send (event: Parameters<Actor<typeof mqttLinkMachine>['send']>[0]): void {
    actor?.send(event)
  }

  function open (): void {
    const gen = ++generation
    events.emit('attempt')
    urlIndex = attemptsOpened++ % urls.length
    const attemptVersion = version
    let acknowledged = false
    const c = openClient({
      url: urls[urlIndex] as string,
      clientId: options.clientId,
      keepaliveS: options.keepaliveS,
      connectTimeoutMs: options.connectTimeoutMs,
      protocolVersion: attemptVersion,
      ...(options.will !== undefined ? { will: options.will } : {})
    })
    client = c
    unrouted.clear()
    const current = (): boolean => gen === generation
    c.on('connect', () => {
      if (!current()) return
      acknowledged = true
      lastInboundAt = clock.now()
      if (protocol === 'auto' && loggedVersion !== attemptVersion) {
        loggedVersion = attemptVersion
        if (attemptVersion === 4) log.warn({ refused_5: refusedFive }, 'using MQTT 3.1.1: the broker did not accept an MQTT 5 CONNECT (MQTT_PROTOCOL=auto)')
        else log.info('using MQTT 5 (MQTT_PROTOCOL=auto)')
      }
      send({ type: 'CONNECTED' })
    })
    if (attemptVersion === 5) {
      c.on('packetreceive', (packet) => {
        if (!current() || packet.cmd !== 'puback' || unrouted.size === 0) return
        const id = packet.messageId as number
        const onUnrouted = unrouted.get(id)
        if (onUnrouted === undefined) return
        unrouted.delete(id)
        if (packet.reasonCode === 16) onUnrouted()
      })
    }
    // Once per attempt: from the client's error or close, or from drop() when the machine
    // gives up on it (a connect timeout: the close that follows is no longer heard).
    let reported = false
    const lost = (err: (Error & { code?: unknown }) | null): void => {
      if (reported) return
      reported = true
      if (protocol !== 'auto' || refusedFive) return
      if (acknowledged) {
        // A connection made at 3.1.1 by guesswork: the next one tries 5 again.
        version = 5
        return
      }
      // CONNACK 1 (3.1.1: unacceptable protocol version) or 0x84 (5: unsupported protocol version).
      if (attemptVersion === 5 && err !== null && (err.code === 1 || err.code === 132 || /unacceptable protocol version|unsupported protocol version/i.test(err.message))) {
        refusedFive = true
        version = 4
        return
      }
      // A broker that is not there says nothing about its protocol, at either version.
      if (err !== null && /ECONNREFUSED|ENOTFOUND/.test(err.message)) return
      version = attemptVersion === 5 ? 4 : 5
    }
    lostCurrent = lost
    c.on('message', (topic, payload, packet) => {
      if (!current()) return
      lastInboundAt = clock.now()
      if (topic === options.probeTopic) {
        if (state === 'stale') send({ type: 'PROBE_ACK' })
        return
      }
      const handler = routes.get(topic) ?? underRoute(topic)
      if (handler === undefined) return
      // A handler reads a peer's bytes; whatever they are, a throw must not reach mqtt.js's
      // emitter, where it would end the process (main.ts's uncaughtException handler).
      try {
        handler(payload, topic, packet.retain)
      } catch (err) {
        log.error({ topic, bytes: payload.length, err: err instanceof Error ? err.stack : String(err) }, 'mqtt message handler threw; message dropped')
        options.onHandlerError?.()
      }
    })
    c.on('error', (err) => {
      if (!current()) return
      lost(err)
      send({ type: 'CONNECTION_LOST', reason: err.message })
    })
    c.on('close', () => {
      if (!current()) return
      lost(null)
      send({ type: 'CONNECTION_LOST', reason: 'connection closed' })
    })
  }

  function underRoute (topic: string): ((payload: Buffer, topic: string, retained?: boolean) => void) | undefined {
    if (prefixRoutes.size === 0) return undefined
    const cut = topic.lastIndexOf('/') + 1
    // One level only (`+`): `<prefix>/workers/a/b` is no worker's topic.
    return prefixRoutes.get(topic.slice(0, cut))
  }

  function drop (): void {
    lostCurrent(null)
    generation++
    const c = client
    client = null
    if (c !== null) {
      c.removeAllListeners('connect').removeAllListeners('message')
      // Keep a no-op error listener: a destroyed stream may still emit, and an unhandled
      // 'error' event would crash the process.
      c.on('error', () => {})
      c.end(true)
    }
  }

  function close (): void {
    generation++
    const c = client
    client = null
    if (c === null) { closing = Promise.resolve(); return }
    c.removeAllListeners('message')
    c.on('error', () => {})
    closing = new Promise<void>((resolve) => {
      // A broker that stopped answering must not hold shutdown: force it after a bound.
      const timer = clock.setTimeout(() => { c.end(true); resolve() }, options.connectTimeoutMs)
      c.end(false, () => { clock.clearTimeout(timer); resolve() })
    })
  }

  const capped = (qos: QoS): QoS => (options.subscribeQos === 0 ? 0 : qos)

  function restoreSubscriptions (): void {
    const c = client
    if (c === null) return
    const map: Record<string, { qos: QoS }> = { [options.probeTopic]: { qos: 0 } }
    for (const [topic, entry] of handlers) {
      if (entry.optional) subscribeOptional(c, topic, entry.qos)
      else map[topic] = { qos: capped(entry.qos) }
    }
    c.subscribe(map, (err) => {
      if (err !== null && err !== undefined) {
        log.error({ err: err.message }, 'restoring subscriptions failed; rebuilding the link')
        send({ type: 'CONNECTION_LOST', reason: `subscribe failed: ${err.message}` })
      }
    })
  }

  function subscribeOptional (c: MqttClient, topic: string, qos: QoS): void {
    c.subscribe(topic, { qos: capped(qos) }, (err) => {
      if (err !== null && err !== undefined) log.warn({ topic, err: err.message }, 'the broker refused an optional subscription (its ACL predates it?); going on without it')
    })
  }

  function silenceStart (): number | null {
    const since = options.inFlightSince()
    return since === null ? null : Math.max(since, lastInboundAt)
  }

  function looksStale (): boolean {
    const now = clock.now()
    if (now - lastInboundAt >= keepaliveMs) return true
    const silent = silenceStart()
    return silent !== null && now - silent >= options.staleAfterMs
  }

  function msUntilStaleCheck (): number {
    const now = clock.now()
    let wait = keepaliveMs - (now - lastInboundAt)
    const silent = silenceStart()
    if (silent !== null) wait = Math.min(wait, options.staleAfterMs - (now - silent))
    // Never spin: a check at most every 10 ms even when the maths says "now".
    return Math.max(10, Math.min(wait, keepaliveMs))
  }

  const machine = mqttLinkMachine.provide({
    actions: {
      openConnection: open,
      dropConnection: drop,
      closeConnection: close,
      restoreSubscriptions,
      sendProbe: () => {
        client?.publish(options.probeTopic, String(clock.now()), { qos: 0 })
      },
      notifyUp: () => {
        downSince = null
        events.emit('up')
      },
      notifyDown: ({ context }) => {
        if (downSince === null) downSince = clock.now()
        events.emit('down', context.lastError)
      },
      noteRetryScheduled: ({ context }) => {
        nextAttemptAt = clock.now() + context.retryDelayMs
      }
    },
    guards: { linkLooksStale: looksStale },
    delays: { nextStaleCheck: msUntilStaleCheck }
  })

  return {
    start () {
      if (actor !== null) return
      actor = createActor(machine, {
        clock,
        input: {
          maxReconnectAttempts: options.maxReconnectAttempts,
          backoffBaseMs: options.backoffBaseMs,
          backoffCapMs: options.backoffCapMs,
          connectTimeoutMs: options.connectTimeoutMs,
          probeTimeoutMs: options.probeTimeoutMs,
          random: options.random ?? Math.random
        }
      })
      actor.subscribe((snapshot) => {
        const next = linkStateName(snapshot.value)
        if (next === state) return
        const t: LinkTransition = { from: state, to: next, at: clock.now(), reason: snapshot.context.lastError }
        state = next
        transitions.push(t)
        if (transitions.length > HISTORY) transitions.shift()
        // A routine probe (connected -> stale -> connected) is debug; a failed one is the warning.
        const routine = next === 'stale' || (t.from === 'stale' && next === 'connected')
        const level = routine ? 'debug' : next === 'connected' || next === 'closed' || next === 'connecting' ? 'info' : 'warn'
        log[level]({ from: t.from, to: t.to, reason: t.reason, attempts: snapshot.context.attempts }, 'mqtt link transition')
        events.emit('transition', t)
      })
      actor.start()
    },
    async stop () {
      if (actor === null) return
      send({ type: 'CLOSE' })
      await closing
      actor.stop()
    },
    publish (topic, payload, qos, extra, retain) {
      if (!carriesChats(state) || client === null) return false
      if (retain === true) {
        client.publish(topic, payload, { qos, retain: true })
        return true
      }
      if (extra === undefined || version !== 5) {
        client.publish(topic, payload, { qos })
        return true
      }
      const before = client.getLastMessageId()
      client.publish(topic, payload, extra.properties !== undefined ? { qos, properties: extra.properties } : { qos })
      if (extra.onUnrouted !== undefined && qos === 1) {
        const id = client.getLastMessageId()
        // Unchanged: mqtt.js queued it instead of sending (it will be sent on reconnect, or lost
        // with this connection); the answer then comes from the deadline, not the PUBACK.
        if (id !== before && id !== undefined) unrouted.set(id, extra.onUnrouted)
      }
      return true
    },
    get protocolVersion () { return version },
    subscribe (topic, qos, handler, subscribeOptions) {
      const previous = handlers.get(topic)
      if (previous !== undefined) {
        if (previous.under !== undefined) prefixRoutes.delete(previous.under)
        else if (routes.get(previous.deliverAs) === previous.handler) routes.delete(previous.deliverAs)
      }
      const under = subscribeOptions?.deliverUnder
      const deliverAs = subscribeOptions?.deliverAs ?? topic
      const optional = subscribeOptions?.optional === true
      handlers.set(topic, { qos, handler, deliverAs, under, optional })
      if (under !== undefined) prefixRoutes.set(under, handler)
      else routes.set(deliverAs, handler)
      if ((state === 'connected' || state === 'stale') && client !== null) {
        if (optional) subscribeOptional(client, topic, qos)
        else client.subscribe(topic, { qos: capped(qos) })
      }
    },
    unsubscribe (topic) {
      const entry = handlers.get(topic)
      if (entry === undefined) return
      handlers.delete(topic)
      if (entry.under !== undefined) {
        if (prefixRoutes.get(entry.under) === entry.handler) prefixRoutes.delete(entry.under)
      } else if (routes.get(entry.deliverAs) === entry.handler) routes.delete(entry.deliverAs)
      if (state === 'connected' || state === 'stale') client?.unsubscribe(topic)
    },
    wake () {
      if (state === 'connected') send({ type: 'WAKE' })
    },
    get state () { return state },
    get isUp () { return carriesChats(state) },
    get attempts () { return actor?.getSnapshot().context.attempts ?? 0 },
    get maxAttempts () { return options.maxReconnectAttempts },
    get lastActivityAt () { return lastInboundAt },
    get downSince () { return downSince },
    get clientId () { return options.clientId },
    get broker () { return hostOf(urls[urlIndex] as string) },
    nextAttemptInMs () {
      if (state !== 'reconnecting' && state !== 'givingUp') return 0
      return Math.max(0, nextAttemptAt - clock.now())
    },
    retryAfterS () {
      // downSince, not state: the chats in flight are failed while the machine enters
      // reconnecting/givingUp, before `state` (updated by the snapshot listener) says so.
      const waitMs = downSince === null ? 0 : Math.max(0, nextAttemptAt - clock.now())
      return Math.max(1, Math.ceil(waitMs / 1000))
    },
    get subscriptionCount () { return handlers.size },
    recentTransitions: () => transitions.slice(),
    events
  }
}
