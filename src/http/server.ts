/**
 * The uWebSockets.js app: the route table, the 404/405/OPTIONS fallback, and a guard that
 * turns a throwing handler into a 500 instead of a crashed process.
 */
import uWS, { type HttpRequest, type HttpResponse, type TemplatedApp, type WebSocket, type WebSocketBehavior, type us_listen_socket, type us_socket_context_t } from 'uWebSockets.js'
import type { Logger } from '../log.js'
import { openExchange, send, sendError, type Exchange, type ExchangeHooks } from './exchange.js'

export type Method = 'get' | 'post'
export type Handler = (res: HttpResponse, req: HttpRequest) => void

export interface Route {
  method: Method
  path: string
  handler: Handler
}

export interface HttpServer {
  listen: (host: string, port: number) => Promise<number>
  /** Native fan-out to every WebSocket subscribed to `topic`. */
  publish: (topic: string, message: string) => void
  /** Stops accepting connections; open keep-alive connections end after their current request. */
  close: () => void
}

export interface SocketRoute {
  pattern: string
  behavior: WebSocketBehavior<any>
  /**
   * A handler of this socket threw (caught and logged here). The default ends the socket with
   * 1011; the gateway closes it through its registry so the reason is counted.
   */
  onThrow?: (ws: WebSocket<any>, where: string) => void
}

export interface HttpServerOptions {
  routes: readonly Route[]
  sockets?: readonly SocketRoute[]
  hooks: ExchangeHooks
  preflightHeaders: readonly (readonly [string, string])[]
  log: Logger
  /** A WebSocket handler threw (it was caught), for the metrics. */
  onSocketHandlerError?: (where: 'ws_upgrade' | 'ws_open' | 'ws_message' | 'ws_drain' | 'ws_close') => void
}

export function createHttpServer (options: HttpServerOptions): HttpServer {
  const { hooks, log } = options
  const app: TemplatedApp = uWS.App()
  const allowed = new Map<string, Set<string>>()

  for (const socket of options.sockets ?? []) app.ws(socket.pattern, guardedSocket(socket))

  for (const route of options.routes) {
    const methods = allowed.get(route.path) ?? new Set<string>()
    methods.add(route.method.toUpperCase())
    allowed.set(route.path, methods)
    app[route.method](route.path, guarded(route.path, route.handler))
  }

  // Every known path answers other methods with 405 (and OPTIONS with the preflight); uWS
  // prefers a method-specific handler over `any` for the same pattern.
  for (const [path, methods] of allowed) {
    app.any(path, guarded(path, (res, req) => {
      const method = req.getMethod().toUpperCase()
      const ex = openExchange(res, req, path)
      if (method === 'OPTIONS') {
        send(hooks, ex, 204, '', [...options.preflightHeaders, ['allow', allowHeader(methods)]])
        return
      }
      sendError(hooks, ex, 'method_not_allowed', {
        message: `${path} accepts ${allowHeader(methods)}.`,
        headers: [['allow', allowHeader(methods)]]
      })
    }))
  }

  app.any('/*', guarded('unmatched', (res, req) => {
    const url = req.getUrl()
    const method = req.getMethod().toUpperCase()
    const methods = allowed.get(url)
    const ex = openExchange(res, req, methods === undefined ? 'unmatched' : url)
    if (method === 'OPTIONS') {
      send(hooks, ex, 204, '', [...options.preflightHeaders, ['allow', allowHeader(methods)]])
      return
    }
    if (methods === undefined) {
      sendError(hooks, ex, 'not_found', { message: `No route ${method} ${url.slice(0, 200)}.` })
      return
    }
    sendError(hooks, ex, 'method_not_allowed', {
      message: `${url} accepts ${allowHeader(methods)}.`,
      headers: [['allow', allowHeader(methods)]]
    })
  }))

  function guarded<A extends unknown[]> (route: string, handler: (res: HttpResponse, req: HttpRequest, ...rest: A) => void): (res: HttpResponse, req: HttpRequest, ...rest: A) => void {
    return (res, req, ...rest) => {
      hooks.onRequest?.(route)
      try {
        if (headerBytes(req) > MAX_HEADER_BYTES) {
          const ex = openExchange(res, req, route)
          log.info({ request_id: ex.requestId, route }, 'request headers over 16 KB refused')
          sendError(hooks, ex, 'headers_too_large', { closeConnection: true })
          return
        }
        handler(res, req, ...rest)
      } catch (err) {
        log.error({ route, err: (err as Error).stack ?? String(err) }, 'route handler threw')
        const ex: Exchange = { res, route, requestId: 'unknown', origin: '', clientCloses: false, aborted: false, answered: false, onAbort: null }
        try { sendError(hooks, ex, 'internal_error') } catch { /* the response may already be gone */ }
      }
    }
  }

  /**
   * A socket's handlers read a peer's bytes: a throw out of one would reach uWS and end the
   * process. Each is wrapped like the HTTP routes: logged, counted, and the socket ended
   * (a socket whose handler failed half-way is in a state nobody can vouch for).
   */
  function guardedSocket (socket: SocketRoute): WebSocketBehavior<any> {
    const behavior: WebSocketBehavior<any> = { ...socket.behavior }
    const report = (where: 'open' | 'message' | 'drain' | 'close', err: unknown): void => {
      log.error({ route: socket.pattern, where, err: err instanceof Error ? err.stack : String(err) }, 'websocket handler threw')
      options.onSocketHandlerError?.(`ws_${where}`)
    }
    const endSocket = (ws: WebSocket<any>, where: string): void => {
      try {
        if (socket.onThrow !== undefined) socket.onThrow(ws, where)
        else ws.end(1011, 'internal error')
      } catch (err) { log.error({ route: socket.pattern, err: String(err) }, 'closing a failed websocket threw') }
    }
    const { open, message, drain, close, upgrade } = socket.behavior
    if (upgrade !== undefined) {
      // guarded() answers 500 and logs; this only counts.
      behavior.upgrade = guarded(socket.pattern, (res, req, context: us_socket_context_t) => {
        try { void upgrade(res, req, context) } catch (err) { options.onSocketHandlerError?.('ws_upgrade'); throw err }
      })
    }
    if (open !== undefined) {
      behavior.open = (ws) => {
        try { open(ws) } catch (err) { report('open', err); endSocket(ws, 'open') }
      }
    }
    if (message !== undefined) {
      behavior.message = (ws, data, isBinary) => {
        try { message(ws, data, isBinary) } catch (err) { report('message', err); endSocket(ws, 'message') }
      }
    }
    if (drain !== undefined) {
      behavior.drain = (ws) => {
        try { drain(ws) } catch (err) { report('drain', err); endSocket(ws, 'drain') }
      }
    }
    if (close !== undefined) {
      behavior.close = (ws, code, reason) => {
        // The socket is gone already: nothing to end, only to report.
        try { close(ws, code, reason) } catch (err) { report('close', err) }
      }
    }
    return behavior
  }

  let listenSocket: us_listen_socket | null = null
  return {
    listen (host, port) {
      return new Promise((resolve, reject) => {
        app.listen(host, port, (socket) => {
          if (socket === false) {
            reject(new Error(`cannot listen on ${host}:${port} (address in use or not permitted)`))
            return
          }
          listenSocket = socket
          resolve(uWS.us_socket_local_port(socket as unknown as uWS.us_socket))
        })
      })
    },
    publish (topic, message) { app.publish(topic, message) },
    close () {
      if (listenSocket !== null) uWS.us_listen_socket_close(listenSocket)
      listenSocket = null
    }
  }
}

/**
 * Contract: more than 16 KB of request headers is 431. uWebSockets.js's own limit is far
 * higher, so the sum is checked here (a handful of headers: well under a microsecond).
 */
export const MAX_HEADER_BYTES = 16 * 1024

function headerBytes (req: HttpRequest): number {
  let size = 0
  req.forEach((key, value) => { size += key.length + value.length + 4 })
  return size
}

function allowHeader (methods: Set<string> | undefined): string {
  return [...(methods ?? []), 'OPTIONS'].join(', ')
}
