/**
 * Hints from MQTT to WebSockets. One MQTT subscription per session however many sockets it
 * has: taken with the first socket, dropped with the last, and restored after every
 * reconnect by the link's subscription registry. Fan-out is uWebSockets.js's native topic
 * publish (a JavaScript loop over 10,000 sockets blocked the loop for 100+ ms per broadcast).
 */
import type { MqttLink } from '../mqtt/mqtt-link.js'
import type { Topics } from '../mqtt/topics.js'
import { nestsDeeperThan, MAX_JSON_DEPTH } from '../peer-json.js'

/** Why a hint was not delivered: over HINT_MAX_BYTES, or JSON nested too deep to be safe. */
export type HintDrop = 'too_large' | 'too_deep'

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
  /** Largest hint payload passed on (HINT_MAX_BYTES); larger ones are dropped and counted. */
  maxBytes: number
  onHint?: (sessionId: string) => void
  /**
   * A hint was dropped. A retained one comes back on every subscribe, so dropping must stay
   * cheap: the size is checked before any byte is read, the depth by one linear scan.
   */
  onDropped?: (reason: HintDrop) => void
}

export function wsTopic (sessionId: string): string { return `hints/${sessionId}` }

/**
 * The frame sent to browsers: `data` is the payload's JSON when it parses, its text otherwise.
 * Valid JSON is passed on as the publisher wrote it, never re-serialised (JSON.stringify
 * recurses, and a 100,000-deep array overflowed the stack); JSON nested deeper than
 * MAX_JSON_DEPTH is dropped, since browsers' parsers have limits of their own.
 */
export function hintFrame (sessionId: string, payload: Buffer, ts: number): string | { dropped: 'too_deep' } {
  const text = payload.toString('utf8')
  let data = text
  try {
    JSON.parse(text) // iterative in V8: safe at any depth
    if (nestsDeeperThan(text, MAX_JSON_DEPTH)) return { dropped: 'too_deep' }
  } catch {
    data = JSON.stringify(text) // plain text hint
  }
  return `{"type":"hint","session_id":${JSON.stringify(sessionId)},"data":${data},"ts":${ts}}`
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
          if (payload.length > options.maxBytes) { options.onDropped?.('too_large'); return }
          const frame = hintFrame(sessionId, payload, options.clock.now())
          if (typeof frame !== 'string') { options.onDropped?.(frame.dropped); return }
          options.publish(topic, frame)
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
