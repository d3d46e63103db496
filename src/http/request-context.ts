/**
 * What a JSON route handler gets: the exchange, the authenticated user (when the route
 * requires one), the parsed body (when it takes one), path parameters and the client address
 * — all copied out of uWebSockets.js's request before anything awaits.
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import type { TokenClaims, Tokens } from '../auth/tokens.js'
import { bearerToken } from '../auth/tokens.js'
import { TetherError } from '../errors.js'
import { describeFailure } from '../failure.js'
import type { Logger } from '../log.js'
import { openExchange, sendError, sendJson, type Exchange, type ExchangeHooks } from './exchange.js'
import type { ClientAddress } from './client-address.js'
import { readBody } from './read-body.js'
import { parseJsonObject } from './validate.js'

export interface RouteDeps {
  hooks: ExchangeHooks
  log: Logger
  tokens: Tokens
  maxBodyBytes: number
  /** The client's address from the socket peer and X-Real-IP (TRUST_PROXY decides which). */
  clientAddress?: ClientAddress
}

export interface RequestContext {
  ex: Exchange
  user: TokenClaims | null
  body: Record<string, unknown>
  params: string[]
  query: string
  remoteAddress: string
}

export interface JsonRouteSpec {
  route: string
  auth: boolean
  readsBody: boolean
  /** Number of path parameters to copy (uWS `:name` segments). */
  params?: number
  /** An empty body counts as `{}` (every field optional). */
  emptyBodyOk?: boolean
  /** Resolves to the status and body to send; throw TetherError for contract errors. */
  handle: (ctx: RequestContext) => Promise<{ status: number, body: unknown, headers?: [string, string][] } | null>
}

/** Answers anything a handler threw with the contract's error response. */
export function answerFailure (deps: Pick<RouteDeps, 'hooks' | 'log'>, ex: Exchange, err: unknown): void {
  const f = describeFailure(err, deps.log, { request_id: ex.requestId, route: ex.route })
  sendError(deps.hooks, ex, f.code, { message: f.message, ...(f.retryAfterS !== undefined ? { retryAfterS: f.retryAfterS } : {}) })
}

export function authenticate (tokens: Tokens, authorization: string): TokenClaims | TetherError {
  const token = bearerToken(authorization)
  if (token === '') return new TetherError('unauthorized', 'A Bearer token is required.')
  const verified = tokens.verify(token)
  if (!verified.ok) {
    return new TetherError('unauthorized', verified.reason === 'expired' ? 'The token has expired.' : 'The token is not valid.')
  }
  return verified.claims
}

export function jsonRoute (deps: RouteDeps, spec: JsonRouteSpec): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const ex = openExchange(res, req, spec.route)
    const params: string[] = []
    for (let i = 0; i < (spec.params ?? 0); i++) params.push(req.getParameter(i) ?? '')
    const query = req.getQuery() ?? ''
    const authorization = req.getHeader('authorization')
    const peer = Buffer.from(res.getRemoteAddressAsText()).toString()
    const remoteAddress = deps.clientAddress === undefined ? peer : deps.clientAddress(peer, req.getHeader('x-real-ip'))
    let user: TokenClaims | null = null
    if (spec.auth) {
      const result = authenticate(deps.tokens, authorization)
      if (result instanceof TetherError) {
        deps.log.info({ request_id: ex.requestId, route: spec.route, problem: result.message }, 'unauthorized')
        if (spec.readsBody) res.onData(() => {})
        sendError(deps.hooks, ex, result.code, { message: result.message })
        return
      }
      user = result
    }
    const run = (body: Record<string, unknown>): void => {
      spec.handle({ ex, user, body, params, query, remoteAddress }).then(
        (answer) => { if (answer !== null) sendJson(deps.hooks, ex, answer.status, answer.body, answer.headers) },
        (err: unknown) => { answerFailure(deps, ex, err) }
      )
    }
    if (!spec.readsBody) { run({}); return }
    readBody(res, req.getHeader('content-length'), deps.maxBodyBytes, (result) => {
      if (!result.ok) { answerTooLarge(deps, ex, result.drained); return }
      const parsed = result.body.length === 0 && spec.emptyBodyOk === true ? { ok: true as const, value: {} } : parseJsonObject(result.body)
      if (!parsed.ok) {
        deps.log.info({ request_id: ex.requestId, route: spec.route, problem: parsed.message }, 'invalid request')
        sendError(deps.hooks, ex, 'invalid_request', { message: parsed.message })
        return
      }
      run(parsed.value)
    })
  }
}

/**
 * 413 for a body over MAX_BODY_BYTES. The connection is closed only when the rest of the body
 * could not be drained (read-body.ts): a drained one may carry the client's next request.
 */
export function answerTooLarge (deps: Pick<RouteDeps, 'hooks' | 'log' | 'maxBodyBytes'>, ex: Exchange, drained: boolean): void {
  deps.log.info({ request_id: ex.requestId, route: ex.route, limit: deps.maxBodyBytes, drained }, 'body too large')
  sendError(deps.hooks, ex, 'payload_too_large', { message: `The body exceeds ${deps.maxBodyBytes} bytes.`, closeConnection: !drained })
}

/** Throws the 400 for a failed field check. */
export function required<T> (parsed: { ok: true, value: T } | { ok: false, message: string }): T {
  if (!parsed.ok) throw new TetherError('invalid_request', parsed.message)
  return parsed.value
}
