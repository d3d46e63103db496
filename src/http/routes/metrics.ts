/** GET /metrics: Prometheus text exposition from the one registry. */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import type { Registry } from 'prom-client'
import type { Logger } from '../../log.js'
import { openExchange, send, sendError, type ExchangeHooks } from '../exchange.js'
import { ROUTES } from '../route-table.js'

export function metricsHandler (hooks: ExchangeHooks, registry: Registry, log: Logger): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.metrics.path)
    registry.metrics().then(
      (text) => { send(hooks, ex, 200, text, [['content-type', registry.contentType]]) },
      (err: Error) => {
        log.error({ err: err.message }, 'collecting metrics failed')
        sendError(hooks, ex, 'internal_error')
      }
    )
  }
}
