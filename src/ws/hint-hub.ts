/**
 * Hints from MQTT to WebSockets. One MQTT subscription per session however many sockets it
 * has: taken with the first socket, dropped with the last, and restored after every
 * reconnect by the link's subscription registry. Fan-out is uWebSockets.js's native topic
 * publish (a JavaScript loop over 10,000 sockets blocked the loop for 100+ ms per broadcast).
 */
import type { MqttLink } from '../mqtt/mqtt-link.js'
import type { Topics } from '../mqtt/topics.js'

export interface HintHub {
  /** A socket of `sessionId` opened; returns the uWS topic it must subscribe to. */
  join: (sessionId: string) => string
  leave: (sessionId: string) => void
  /** Sessions with at least one socket (= MQTT hint subscriptions held). */
  readonly sessions: number
  subscribedSessions: () => string[]
}

export interface HintHubOptions {
  link: Pick<MqttLink, 'subscribe' | 'unsubscribe'>
  topics: Topics
  clock: { now: () => number }
  /** uWS app.publish: native fan-out to every socket subscribed to the topic. */
  publish: (topic: string, message: string) => void
  onHint?: (sessionId: string) => void
}

export function wsTopic (sessionId: string): string { return `hints/${sessionId}` }

/** The frame sent to browsers: `data` is the payload's JSON when it parses, its text otherwise. */
export function hintFrame (sessionId: string, payload: Buffer, ts: number): string {
  const text = payload.toString('utf8')
  let data: unknown = text
  try { data = JSON.parse(text) } catch { /* plain text hint */ }
  return JSON.stringify({ type: 'hint', session_id: sessionId, data, ts })
}

export function createHintHub (options: HintHubOptions): HintHub {
  const counts = new Map<string, number>()
  return {
    join (sessionId) {
      const n = counts.get(sessionId) ?? 0
      counts.set(sessionId, n + 1)
      if (n === 0) {
        const topic = wsTopic(sessionId)
        options.link.subscribe(options.topics.hints(sessionId), 1, (payload) => {
          options.publish(topic, hintFrame(sessionId, payload, options.clock.now()))
          options.onHint?.(sessionId)
        })
      }
      return wsTopic(sessionId)
    },
    leave (sessionId) {
      const n = counts.get(sessionId) ?? 0
      if (n <= 1) {
        counts.delete(sessionId)
        if (n === 1) options.link.unsubscribe(options.topics.hints(sessionId))
      } else {
        counts.set(sessionId, n - 1)
      }
    },
    get sessions () { return counts.size },
    subscribedSessions: () => [...counts.keys()]
  }
}
