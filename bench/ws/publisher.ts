/**
 * The hint publisher: one mqtt.js client on a no-delay socket (bench/lib/mqtt-socket.ts),
 * publishing `{"p","seq","t"}` on `<prefix>/hints/<session>` round-robin over the sessions at a
 * fixed rate (open loop, bench/ws/pace.ts). `t` is taken right before each publish, so a
 * publisher that falls behind shows up as its own lag, not as gateway latency.
 */
import type { MqttClient } from 'mqtt'
import { round3 } from '../lib/stats.js'
import { paced } from './pace.js'
import { epochMs } from './protocol.js'

export interface PublishResult {
  readonly hints_per_s_target: number
  readonly published: number
  readonly planned: number
  readonly window_s: number
  readonly hints_per_s: number
  /** Longest a hint waited past its due time in the publisher, ms. */
  readonly publisher_max_lag_ms: number
  /** PUBACKs (QoS 1) still missing after the drain, and publish errors. */
  readonly unacked: number
  readonly errors: number
  readonly cut_short: boolean
}

export async function publishHints (client: MqttClient, o: { prefix: string, sessionIds: readonly string[], phase: number, ratePerS: number, durationS: number, qos: 0 | 1 }): Promise<PublishResult> {
  const planned = Math.max(1, Math.round(o.ratePerS * o.durationS))
  const topics = o.sessionIds.map((id) => `${o.prefix}/hints/${id}`)
  let acked = 0
  let errors = 0
  const onAck = (err?: Error): void => { if (err !== undefined && err !== null) errors++; else acked++ }
  const pace = await paced({
    ratePerS: o.ratePerS,
    total: planned,
    // A publisher that cannot keep up is stopped at 1.5x the window plus 2 s, and says so.
    maxMs: o.durationS * 1500 + 2000,
    send: (seq) => {
      const topic = topics[seq % topics.length] as string
      client.publish(topic, `{"p":${o.phase},"seq":${seq},"t":${epochMs()}}`, { qos: o.qos }, onAck)
    }
  })
  // QoS 1: every PUBACK within 5 s, or the count of missing ones is reported.
  const end = Date.now() + 5000
  while (acked + errors < pace.sent && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 10))
  // First send to last send, plus one interval: N hints at rate r span N / r seconds.
  const windowS = (pace.elapsedMs + 1000 / o.ratePerS) / 1000
  return {
    hints_per_s_target: o.ratePerS,
    published: pace.sent,
    planned,
    window_s: round3(windowS),
    hints_per_s: round3(pace.sent / windowS),
    publisher_max_lag_ms: round3(pace.maxLagMs),
    unacked: pace.sent - acked - errors,
    errors,
    cut_short: pace.cutShort
  }
}
