/**
 * The demo responder: a stand-in worker so that a fresh `npm start` answers chats with no
 * model behind it. It is an ordinary MQTT client of the broker (the same path a real worker
 * takes) and labels every reply as coming from the demo, so nobody mistakes it for a model.
 */
import type { MqttClient } from 'mqtt'
import type { Clock } from '../clock.js'
import { isValidId } from '../ids.js'
import { asObject, parsePeerJson } from '../peer-json.js'
import type { Logger } from '../log.js'
import { openClient } from './open-client.js'
import type { Topics } from './topics.js'

export interface DemoResponder {
  stop: () => Promise<void>
}

export const DEMO_LABEL = '[demo responder]'

/**
 * The demo's fixed wait before reconnecting: it talks to a broker on loopback (the embedded
 * one) or next to the gateway, so a plain second is enough, and never a tight loop.
 */
const DEMO_RETRY_MS = 1000

/** The reply text, split into the chunks the demo streams (word by word). */
export function demoReply (content: string): { chunks: string[], full: string } {
  const full = `${DEMO_LABEL} You said: ${content}`
  const chunks = full.match(/\S+\s*/g) ?? [full]
  return { chunks, full }
}

export interface DemoResponderOptions {
  url: string
  topics: Topics
  clientId: string
  /** The gateway's own link settings (MQTT_KEEPALIVE_S, MQTT_CONNECT_TIMEOUT_MS). */
  keepaliveS: number
  connectTimeoutMs: number
  clock: Clock
  log: Logger
}

export function startDemoResponder (options: DemoResponderOptions): DemoResponder {
  const { topics, log, clock } = options
  const client: MqttClient = openClient({ url: options.url, clientId: options.clientId, keepaliveS: options.keepaliveS, connectTimeoutMs: options.connectTimeoutMs })
  let stopped = false

  client.on('connect', () => {
    // A plain subscription: not every 3.1.1 broker knows $share, and some accept it as a
    // literal topic that never matches. Several demo responders on one broker each answer;
    // the gateway keeps the first reply and counts the rest as duplicates.
    client.subscribe(topics.chatRequest, { qos: 1 })
    log.info('demo responder connected (echo replies, no model)')
  })
  client.on('error', (err) => { log.warn({ err: err.message }, 'demo responder: mqtt error') })
  client.on('close', () => {
    if (stopped) return
    // The demo keeps itself alive with mqtt.js's plain retry; it is not the gateway's link.
    setTimeoutRetry()
  })
  client.on('message', (_topic, payload) => {
    const json = parsePeerJson(payload.toString('utf8'))
    if (!json.ok || asObject(json.value) === null) return
    const request = json.value as { v?: unknown, request_id?: unknown, content?: unknown, reply_to?: unknown }
    if (request.v !== 1 || !isValidId(request.request_id) || typeof request.reply_to !== 'string' || typeof request.content !== 'string') return
    const { chunks, full } = demoReply(request.content)
    const replyTo = request.reply_to
    // seq (contract v1.1) lets the gateway drop a chunk the broker delivers twice.
    chunks.forEach((delta, i) => {
      client.publish(replyTo, JSON.stringify({ v: 1, request_id: request.request_id, type: 'chunk', delta, seq: i + 1 }), { qos: 1 })
    })
    client.publish(request.reply_to, JSON.stringify({ v: 1, request_id: request.request_id, type: 'done', content: full }), { qos: 1 })
  })

  let retry: unknown = null
  function setTimeoutRetry (): void {
    if (retry !== null) return
    retry = clock.setTimeout(() => {
      retry = null
      if (!stopped) client.reconnect()
    }, DEMO_RETRY_MS)
  }

  return {
    stop () {
      stopped = true
      if (retry !== null) clock.clearTimeout(retry)
      return new Promise<void>((resolve) => { client.end(true, () => resolve()) })
    }
  }
}
