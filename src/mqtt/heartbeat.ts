/**
 * A heartbeat on a link: `send` at once when the link comes up and every `intervalMs` after,
 * until stopped. Used by the LLM worker's presence and the gateway's; what is sent, and what a
 * goodbye looks like, is theirs.
 */
import type { Clock } from '../clock.js'
import type { MqttLink } from './mqtt-link.js'

export interface Heartbeat {
  start: () => void
  stop: () => void
}

export function createHeartbeat (o: { link: Pick<MqttLink, 'events' | 'state'>, intervalMs: number, clock: Clock, send: () => void }): Heartbeat {
  const { link, clock } = o
  let timer: unknown = null
  let running = false
  function tick (): void {
    timer = null
    if (!running) return
    o.send()
    timer = clock.setTimeout(tick, o.intervalMs)
  }
  // The others learn of this one the moment the link is back, not an interval later.
  const onUp = (): void => {
    if (!running) return
    if (timer !== null) clock.clearTimeout(timer)
    tick()
  }
  return {
    start () {
      if (running) return
      running = true
      link.events.on('up', onUp)
      if (link.state === 'connected') tick()
    },
    stop () {
      if (!running) return
      running = false
      link.events.off('up', onUp)
      if (timer !== null) clock.clearTimeout(timer)
      timer = null
    }
  }
}
