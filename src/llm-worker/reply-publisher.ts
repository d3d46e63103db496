/**
 * Publishes replies over the link without losing them to a probe. The link refuses to publish
 * while `stale` (it is checking that the broker still routes, which takes one round trip), and
 * a worker streaming a long answer with nothing inbound goes stale once per keepalive. Replies
 * sent in that window are held, in order, and flushed when the probe comes back; the window is
 * bounded by the probe timeout, after which the link is down and the held replies are useless.
 */
import type { MqttLink } from '../mqtt/mqtt-link.js'
import type { ReplyEnvelope, ResumeReply } from '../mqtt/protocol.js'

export type WorkerLink = Pick<MqttLink, 'publish' | 'subscribe' | 'unsubscribe' | 'state' | 'events'>

/** `sent`: handed to the client; `held`: waiting for the probe; `lost`: the link is down. */
export type PublishOutcome = 'sent' | 'held' | 'lost'

export interface ReplyPublisher {
  publish: (topic: string, reply: ReplyEnvelope | ResumeReply) => PublishOutcome
  /**
   * At QoS 0 and only when nothing is held: for an `ack`, which any later reply stands in for.
   * QoS 0 spares the gateway a PUBACK per chat (the ack is a third of the messages of a short
   * answer); a lost one costs nothing while the answer starts within CHAT_ACCEPT_TIMEOUT_MS.
   */
  publishLight: (topic: string, reply: ReplyEnvelope) => void
  readonly held: number
  /** Stops listening to the link. */
  close: () => void
}

/** `workerId`: stamped on every reply (contract v1.1), so a gateway can tell whose reply it is. */
export function createReplyPublisher (link: WorkerLink, workerId?: string): ReplyPublisher {
  const held: Array<{ topic: string, payload: string }> = []

  function flush (): void {
    while (held.length > 0) {
      const next = held[0] as { topic: string, payload: string }
      if (!link.publish(next.topic, next.payload, 1)) return
      held.shift()
    }
  }
  const onTransition = ({ to }: { to: string }): void => { if (to === 'connected') flush() }
  const onDown = (): void => { held.length = 0 }
  link.events.on('transition', onTransition)
  link.events.on('down', onDown)

  return {
    publish (topic, reply) {
      const payload = JSON.stringify(workerId === undefined ? reply : { ...reply, worker_id: workerId })
      // Anything already held goes first: MQTT order per publisher is what keeps chunks in order.
      if (held.length === 0 && link.publish(topic, payload, 1)) return 'sent'
      if (link.state !== 'stale' && link.state !== 'connected') return 'lost'
      held.push({ topic, payload })
      return 'held'
    },
    publishLight (topic, reply) {
      if (held.length === 0) link.publish(topic, JSON.stringify(reply), 0)
    },
    get held () { return held.length },
    close () {
      link.events.off('transition', onTransition)
      link.events.off('down', onDown)
      held.length = 0
    }
  }
}
