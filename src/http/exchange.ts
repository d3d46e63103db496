/**
 * One HTTP request/response pair on uWebSockets.js, with the rules that library imposes kept
 * in one place: everything needed from `req` is copied before the handler returns; an
 * aborted response is never touched again; writes after an await are corked; every response
 * is counted by route template (never by raw URL).
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { ERRORS, errorBody, type ErrorCode } from '../errors.js'
import { newRequestId } from '../ids.js'
import { statusLine } from './status-text.js'

export interface ExchangeHooks {
  /** Called once per answered request, for metrics. */
  onResponse: (route: string, status: number) => void
  /** Headers added to every response (CORS). */
  corsHeaders: (origin: string) => readonly (readonly [string, string])[]
  /** True while shutting down: responses ask the client to close the connection. */
  closing: () => boolean
  /** A request for `route` is starting (the watchdog names the last one if the loop stalls). */
  onRequest?: (route: string) => void
}

export interface Exchange {
  readonly res: HttpResponse
  readonly route: string
  readonly requestId: string
  readonly origin: string
  aborted: boolean
  answered: boolean
  /**
   * The request said `Connection: close`. uWS closes such a connection after the response but
   * does not say so; RFC 9112 9.6 asks the server to, and nginx with upstream keepalive would
   * otherwise reuse the closed connection (502 "upstream prematurely closed connection").
   */
  readonly clientCloses: boolean
  /** Runs once if the client goes away before the answer. */
  onAbort: (() => void) | null
}

export function openExchange (res: HttpResponse, req: HttpRequest, route: string): Exchange {
  const ex: Exchange = {
    res,
    route,
    requestId: newRequestId(),
    origin: req.getHeader('origin'),
    clientCloses: /(^|,)\s*close\s*(,|$)/i.test(req.getHeader('connection')),
    aborted: false,
    answered: false,
    onAbort: null
  }
  res.onAborted(() => {
    ex.aborted = true
    const cb = ex.onAbort
    ex.onAbort = null
    cb?.()
  })
  return ex
}

export function send (
  hooks: ExchangeHooks,
  ex: Exchange,
  status: number,
  body: string,
  headers: readonly (readonly [string, string])[] = [],
  closeConnection = false
): void {
  if (ex.aborted || ex.answered) return
  ex.answered = true
  ex.onAbort = null
  const close = closeConnection || ex.clientCloses || hooks.closing()
  ex.res.cork(() => {
    ex.res.writeStatus(statusLine(status))
    if (!headers.some(([k]) => k === 'content-type')) ex.res.writeHeader('content-type', 'application/json; charset=utf-8')
    ex.res.writeHeader('x-request-id', ex.requestId)
    for (const [k, v] of headers) ex.res.writeHeader(k, v)
    for (const [k, v] of hooks.corsHeaders(ex.origin)) ex.res.writeHeader(k, v)
    // uWS adds "Connection: close" when it closes on its own account, but not when the
    // client asked for the close: then it is ours to say.
    if (ex.clientCloses) ex.res.writeHeader('connection', 'close')
    ex.res.end(body, close)
  })
  hooks.onResponse(ex.route, status)
}

export function sendJson (hooks: ExchangeHooks, ex: Exchange, status: number, value: unknown, headers?: readonly (readonly [string, string])[]): void {
  send(hooks, ex, status, JSON.stringify(value), headers)
}

export function sendError (
  hooks: ExchangeHooks,
  ex: Exchange,
  code: ErrorCode,
  options: { message?: string, retryAfterS?: number, headers?: readonly (readonly [string, string])[], closeConnection?: boolean } = {}
): void {
  const headers: (readonly [string, string])[] = [...(options.headers ?? [])]
  if (options.retryAfterS !== undefined) headers.push(['retry-after', String(options.retryAfterS)])
  // RFC 6750 section 3: a 401 for a Bearer-protected resource names the scheme.
  if (code === 'unauthorized') headers.push(['www-authenticate', 'Bearer'])
  send(hooks, ex, ERRORS[code].status, JSON.stringify(errorBody(code, ex.requestId, options.message)), headers, options.closeConnection)
}
