/**
 * A server-sent-events response on uWebSockets.js (WHATWG HTML, "Server-sent events"): the
 * status line and headers go out with the first event; every write is corked, since events
 * are written from MQTT callbacks, not from the request handler. `X-Accel-Buffering: no`
 * tells nginx not to buffer the stream.
 */
import type { Exchange, ExchangeHooks } from './exchange.js'

export interface EventStream {
  readonly started: boolean
  event: (name: string, data: unknown) => void
  /** Ends the response; `status` is what the metrics count (the wire already said 200). */
  end: (status: number) => void
}

export function openEventStream (hooks: ExchangeHooks, ex: Exchange): EventStream {
  let started = false
  let ended = false
  return {
    get started () { return started },
    event (name, data) {
      if (ex.aborted || ended) return
      ex.res.cork(() => {
        if (!started) {
          started = true
          ex.res.writeStatus('200 OK')
          ex.res.writeHeader('content-type', 'text/event-stream; charset=utf-8')
          ex.res.writeHeader('cache-control', 'no-cache')
          ex.res.writeHeader('x-accel-buffering', 'no')
          ex.res.writeHeader('x-request-id', ex.requestId)
          for (const [k, v] of hooks.corsHeaders(ex.origin)) ex.res.writeHeader(k, v)
        }
        ex.res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`)
      })
    },
    end (status) {
      if (ended) return
      ended = true
      if (ex.aborted || ex.answered) return
      ex.answered = true
      ex.onAbort = null
      ex.res.cork(() => { ex.res.end() })
      hooks.onResponse(ex.route, status)
    }
  }
}
