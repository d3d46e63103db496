/**
 * The WebSocket upgrade, checked before the 101: the session id's shape (400), the token
 * from `?token=` or `Sec-WebSocket-Protocol` (401), and whatever the endpoint checks
 * asynchronously — session ownership (404), a database that is down (503). uWebSockets.js
 * rules: the handshake headers are copied before anything awaits, an aborted request is
 * never upgraded, and the upgrade after the await is corked.
 */
import type { HttpRequest, HttpResponse, us_socket_context_t } from 'uWebSockets.js'
import type { TokenClaims, Tokens } from '../auth/tokens.js'
import { TetherError } from '../errors.js'
import { openExchange, type ExchangeHooks } from '../http/exchange.js'
import { answerFailure } from '../http/request-context.js'
import type { Logger } from '../log.js'

export interface UpgradeDeps {
  hooks: ExchangeHooks
  log: Logger
  tokens: Tokens
  requiresAuth: boolean
  /** Counts refusals by status, for the metrics. */
  onRefused?: (status: number) => void
}

export interface UpgradeSpec<T> {
  route: string
  params: number
  /** Throws TetherError (or a database error) to refuse; resolves to the socket's user data. */
  check: (ctx: { user: TokenClaims | null, params: string[] }) => Promise<T>
  /** Synchronous checks that come before authentication (the session id's shape: 400 first). */
  precheck?: (params: string[]) => TetherError | null
}

/**
 * Browsers cannot set headers on a WebSocket, so the token may come as a subprotocol pair:
 * `new WebSocket(url, ['bearer', token])` sends `Sec-WebSocket-Protocol: bearer, <token>`.
 * Only the entry right after `bearer` is a token (any other entry is a real protocol name),
 * and the server answers `bearer`, one of the offered protocols, or the browser fails the
 * handshake. A `?token=` query parameter is the alternative.
 */
export function pickToken (tokens: Tokens, queryToken: string, offered: string[]): { claims: TokenClaims, protocol: string } | TetherError {
  const bearerAt = offered.findIndex((p) => p.toLowerCase() === 'bearer')
  const protocolToken = bearerAt >= 0 ? offered[bearerAt + 1] ?? '' : ''
  let expired = false
  for (const [candidate, protocol] of [[queryToken, offered[0] ?? ''], [protocolToken, 'bearer']] as const) {
    if (candidate === '') continue
    const verified = tokens.verify(candidate)
    if (verified.ok) return { claims: verified.claims, protocol: bearerAt >= 0 ? 'bearer' : protocol }
    if (verified.reason === 'expired') expired = true
  }
  if (queryToken === '' && protocolToken === '') return new TetherError('unauthorized', 'A token is required (?token= or Sec-WebSocket-Protocol: bearer, <token>).')
  return new TetherError('unauthorized', expired ? 'The token has expired.' : 'The token is not valid.')
}

export function upgradeHandler<T> (deps: UpgradeDeps, spec: UpgradeSpec<T>): (res: HttpResponse, req: HttpRequest, context: us_socket_context_t) => void {
  return (res, req, context) => {
    const ex = openExchange(res, req, spec.route)
    const key = req.getHeader('sec-websocket-key')
    const extensions = req.getHeader('sec-websocket-extensions')
    const offered = req.getHeader('sec-websocket-protocol').split(',').map((p) => p.trim()).filter((p) => p !== '')
    const queryToken = new URLSearchParams(req.getQuery() ?? '').get('token') ?? ''
    const params: string[] = []
    for (let i = 0; i < spec.params; i++) params.push(req.getParameter(i) ?? '')

    const refuse = (err: unknown): void => {
      if (err instanceof TetherError) deps.log.info({ request_id: ex.requestId, route: spec.route, code: err.code }, 'websocket upgrade refused')
      deps.onRefused?.(err instanceof TetherError ? err.status : 500)
      answerFailure(deps, ex, err)
    }
    const early = spec.precheck?.(params) ?? null
    if (early !== null) { refuse(early); return }

    let user: TokenClaims | null = null
    let protocol = offered[0] ?? ''
    if (deps.requiresAuth) {
      const picked = pickToken(deps.tokens, queryToken, offered)
      if (picked instanceof TetherError) { refuse(picked); return }
      user = picked.claims
      protocol = picked.protocol
    }
    spec.check({ user, params }).then(
      (data) => {
        if (ex.aborted) return
        ex.answered = true
        res.cork(() => { res.upgrade(data, key, protocol, extensions, context) })
        deps.hooks.onResponse(spec.route, 101)
      },
      refuse
    )
  }
}
