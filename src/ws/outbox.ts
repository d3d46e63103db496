/** One chat socket's outgoing frames in order, with a resume's replay put behind everyone's first frame. */
import type { WebSocket } from 'uWebSockets.js'

/** What the outbox needs of a socket's data: the chat socket's (chat-socket.ts). */
export interface OutboxData {
  closed: boolean
  /** Frames waiting behind a resume's replay (serialised when sent); null when none. */
  outbox: unknown[] | null
  /** During a resume's replay: 'first' until its first frame is out, then 'defer'. */
  replay: 'off' | 'first' | 'defer'
}

type Socket = Pick<WebSocket<OutboxData>, 'getUserData' | 'cork' | 'send'>

/**
 * Writes frames, corked (they are sent from MQTT and database callbacks too, outside uWS's
 * own, where uWS requires it). Frames are objects until sent. A resume's replay sends its first frame at once and the rest
 * on the next turn of the event loop: when a thousand clients reconnect together (a proxy
 * restart, a network blip), every one of them sees its text again after one frame's work per
 * client, not after the whole replay of every client before it. While a socket has frames
 * waiting, every later frame for it waits behind them, so its order never changes.
 */
export function createOutbox (schedule: (fn: () => void) => void = setImmediate): { send: (ws: Socket, frame: unknown) => void } {
  let waiting: Socket[] = []
  let scheduled = false

  function flush (): void {
    scheduled = false
    const sockets = waiting
    waiting = []
    for (const ws of sockets) {
      const data = ws.getUserData()
      const frames = data.outbox
      data.outbox = null
      if (frames === null || data.closed) continue
      ws.cork(() => { for (const frame of frames) ws.send(JSON.stringify(frame)) })
    }
  }

  return {
    send (ws, frame) {
      const data = ws.getUserData()
      if (data.closed) return
      if (data.outbox !== null) { data.outbox.push(frame); return }
      if (data.replay === 'defer') {
        data.outbox = [frame]
        waiting.push(ws)
        if (!scheduled) { scheduled = true; schedule(flush) }
        return
      }
      if (data.replay === 'first') data.replay = 'defer'
      const text = JSON.stringify(frame)
      ws.cork(() => { ws.send(text) })
    }
  }
}
