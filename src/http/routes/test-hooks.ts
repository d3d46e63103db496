/**
 * Test-only routes, registered only with TETHER_TEST_HOOKS=1 (refused in production by the
 * config). POST /__test/block-event-loop blocks the event loop synchronously — forever, or
 * for `?ms=` milliseconds — so the watchdog and the lag monitor can be tested for real.
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import type { Logger } from '../../log.js'
import { openExchange, sendJson, type ExchangeHooks } from '../exchange.js'
import { ROUTES } from '../route-table.js'


export function blockEventLoopHandler (hooks: ExchangeHooks, log: Logger): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.blockEventLoop.path)
    const ms = Number(new URLSearchParams(req.getQuery() ?? '').get('ms') ?? 'Infinity')
    log.warn({ ms }, 'test hook: blocking the event loop on purpose')
    const until = Date.now() + ms
    // The point is a synchronous loop that never yields.
    while (Date.now() < until) { /* spin */ }
    sendJson(hooks, ex, 200, { blocked_ms: ms })
  }
}
