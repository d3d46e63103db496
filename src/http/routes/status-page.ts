/**
 * The live status page: GET / and GET /status serve one self-contained HTML page (no external
 * assets: operators' browsers may have no internet), which polls GET /api/status every second.
 */
import type { Registry } from 'prom-client'
import type { RuntimeView } from '../../runtime-view.js'
import type { Logger } from '../../log.js'
import { STATUS_PAGE_HTML } from '../../status-page/page.js'
import { computeStatus, type Sample } from '../../status-page/status-report.js'
import { openExchange, send, sendError, sendJson, type ExchangeHooks } from '../exchange.js'
import { ROUTES } from '../route-table.js'
import type { Handler } from '../server.js'

export interface StatusRoutesDeps {
  hooks: ExchangeHooks
  sources: RuntimeView
  /** The metrics registry, for the counters the page turns into rates. */
  registry: Registry
  log: Logger
}

const PAGE_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['content-type', 'text/html; charset=utf-8'],
  ['cache-control', 'no-store'],
  // Inline script and style only, requests to this origin only: a page that tried to load
  // anything from elsewhere would show it as a console error (the browser test fails on those).
  ['content-security-policy', "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"],
  ['x-content-type-options', 'nosniff'],
  ['referrer-policy', 'no-referrer']
]

/** The page itself, served at `path` (it is served under two: / and /status). */
export function statusPageHandler (hooks: ExchangeHooks, path: string): Handler {
  return (res, req) => {
    const ex = openExchange(res, req, path)
    send(hooks, ex, 200, STATUS_PAGE_HTML, PAGE_HEADERS)
  }
}

export function statusApiHandler ({ hooks, sources, registry, log }: StatusRoutesDeps): Handler {
  const samples = async (name: string): Promise<Sample[]> => {
    const metric = registry.getSingleMetric(name)
    return metric === undefined ? [] : (await metric.get()).values
  }
  return (res, req) => {
    const ex = openExchange(res, req, ROUTES.statusApi.path)
    Promise.all([samples('tether_http_responses_total'), samples('tether_chat_requests_total'), samples('tether_ws_connections'), samples('tether_limits_refused_total'), samples('tether_handler_errors_total'), samples('tether_stream_takeovers_total')]).then(
      ([httpResponses, chatOutcomes, wsConnections, limitsRefused, handlerErrors, takeovers]) => {
        sendJson(hooks, ex, 200, computeStatus(sources, { httpResponses, chatOutcomes, wsConnections, limitsRefused, handlerErrors, takeovers }), [['cache-control', 'no-store']])
      },
      (err: Error) => {
        log.error({ err: err.message }, 'collecting the status report failed')
        sendError(hooks, ex, 'internal_error')
      }
    )
  }
}
