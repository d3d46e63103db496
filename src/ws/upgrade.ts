/**
 * The WebSocket upgrade, checked before the 101: the session id's shape (400), the token
 * from `?token=` or `Sec-WebSocket-Protocol` (401), and whatever the endpoint checks
 * asynchronously — session ownership (404), a database that is down (503). uWebSockets.js
 * rules: the handshake headers are copied before anything awaits, and an aborted request is
 * never upgraded.
 *
 * Where the checks can answer at once, the upgrade is made inside uWS's upgrade callback, the
 * way uWS is happiest. After an await it is made uncorked, against uWS's advice, because
 * `res.cork(() => res.upgrade(...))` after an await is broken in the uWS build we use
 * (uNetworking/uWebSockets#1928, fixed upstream by #1929): when the socket's memory is reused
 * in place for the WebSocket, the cork's epilogue reads the new socket's bytes as HTTP state
 * and, depending on them, closes it — fresh hint sockets dropped with 1006 the moment they
 * opened, about one in a few thousand here (test/integration/ws-subscriptions.test.ts).
 * Uncorked, the upgrade is correct; uWS prints one warning line for it on stderr ("writes
 * must be made from within a corked callback", docs/operations.md). The session owner cache
 * (session-owners.ts) keeps that path to the first socket of a session the process has not
 * seen yet.
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
  /** Fair share: open sockets per authenticated user, both endpoints (WS_MAX_PER_USER). */
  perUser?: { count: (userId: string) => number, max: number, onLimited?: () => void }
}

export interface UpgradeSpec<T> {
  route: string
  params: number
  /**
   * The socket's user data, or a promise of it when the answer needs I/O; throws (or
   * rejects with) TetherError or a database error to refuse. Answer synchronously whenever
   * possible: see the header.
   */
  check: (ctx: { user: TokenClaims | null, params: string[] }) => T | Promise<T>
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
    const overShare = (): TetherError | null => {
      if (user === null || deps.perUser === undefined || deps.perUser.count(user.userId) < deps.perUser.max) return null
      deps.perUser.onLimited?.()
      return new TetherError('too_many_requests', `At most ${deps.perUser.max} open sockets per user; close one first.`, 1)
    }
    const over = overShare()
    if (over !== null) { refuse(over); return }
    const upgrade = (data: T): void => {
      // Checked again after an await: other sockets of the user may have opened meanwhile
      // (uWS runs the open handler, which counts the socket, inside upgrade()).
      const late = overShare()
      if (late !== null) { refuse(late); return }
      ex.answered = true
      res.upgrade(data, key, protocol, extensions, context)
      deps.hooks.onResponse(spec.route, 101)
    }
    let checked: T | Promise<T>
    try {
      checked = spec.check({ user, params })
    } catch (err) {
      refuse(err)
      return
    }
    if (!(checked instanceof Promise)) { upgrade(checked); return }
    checked.then((data) => {
      if (ex.aborted) return
      // A throw here would be an unhandled rejection, which ends the process (main.ts).
      try { upgrade(data) } catch (err) {
        deps.log.error({ request_id: ex.requestId, route: spec.route, err: err instanceof Error ? err.stack : String(err) }, 'websocket upgrade threw')
        if (!ex.answered) refuse(err)
      }
    }, refuse).catch((err: unknown) => {
      deps.log.error({ request_id: ex.requestId, route: spec.route, err: err instanceof Error ? err.stack : String(err) }, 'refusing a websocket upgrade threw')
    })
  }
}
