/**
 * A server-sent-events response on uWebSockets.js (WHATWG HTML, "Server-sent events"): the
 * status line and headers go out with the first event; every write is corked, since events
 * are written from MQTT callbacks, not from the request handler. `X-Accel-Buffering: no`
 * tells nginx not to buffer the stream.
 */
import type { Exchange, ExchangeHooks } from './exchange.js'

export interface EventStream {
  readonly started: boolean
  /** `id`: the event's `id:` line (a chunk's seq), which a reconnecting client sends back as Last-Event-ID. */
  event: (name: string, data: unknown, id?: number) => void
  /** Ends the response; `status` is what the metrics count (the wire already said 200). */
  end: (status: number) => void
}

export interface EventStreamLimits {
  /**
   * Bytes that may wait in uWS for a reader that does not keep up (SSE_MAX_BACKPRESSURE).
   * Past it the connection is closed, which runs the exchange's abort handler (the chat is
   * cancelled): a reader that stalls must not make the server hold a whole answer, as a
   * WebSocket past WS_MAX_BACKPRESSURE is closed.
   */
  maxBackpressure: number
  onSlowConsumer?: () => void
}

export function openEventStream (hooks: ExchangeHooks, ex: Exchange, limits?: EventStreamLimits): EventStream {
  let started = false
  let ended = false
  // Bytes of events that uWS holds for this reader: added when a write reports backpressure,
  // cleared once a write goes through whole (uWS sends what it held first).
  let backlog = 0
  let watching = false
  // uWS drains nothing by itself while a writable handler is registered (HttpContext.h), so
  // the handler writes: an SSE comment line (":"), which every client ignores.
  const onWritable = (): boolean => {
    // uWS.js ends the process if this throws or returns a non-boolean.
    if (ended || ex.aborted) return true
    try {
      const drained = ex.res.write(':\n')
      if (drained) backlog = 0
      return drained
    } catch {
      return true
    }
  }
  function wrote (whole: boolean, bytes: number): void {
    if (limits === undefined) return
    if (whole) { backlog = 0; return }
    backlog += bytes
    if (!watching) { watching = true; ex.res.onWritable(onWritable) }
  }
  return {
    get started () { return started },
    event (name, data, id) {
      if (ex.aborted || ended) return
      // Judged before this event is added: a reader already this far behind is not reading. A
      // single event larger than the bound (a long answer's `done`) still goes out.
      if (limits !== undefined && backlog > limits.maxBackpressure) {
        ended = true
        limits.onSlowConsumer?.()
        // Closing runs the exchange's abort handler, which cancels the chat.
        ex.res.close()
        return
      }
      ex.res.cork(() => {
        if (!started) {
          started = true
          ex.res.writeStatus('200 OK')
          ex.res.writeHeader('content-type', 'text/event-stream; charset=utf-8')
          ex.res.writeHeader('cache-control', 'no-cache')
          ex.res.writeHeader('x-accel-buffering', 'no')
          ex.res.writeHeader('x-request-id', ex.requestId)
          // uWS closes after the stream for such a request; the client is told up front
          // (ending a streamed response with end('', true) would write the header mid-body).
          if (ex.clientCloses || hooks.closing()) ex.res.writeHeader('connection', 'close')
          for (const [k, v] of hooks.corsHeaders(ex.origin)) ex.res.writeHeader(k, v)
        }
        const text = `${id === undefined ? '' : `id: ${id}\n`}event: ${name}\ndata: ${JSON.stringify(data)}\n\n`
        wrote(ex.res.write(text), Buffer.byteLength(text))
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
