/**
 * Every route Tether serves, written once: its method, its path (the label it carries in
 * tether_http_responses_total, logs and the watchdog's report) and whether monitoring polls
 * it. The server registers what this table lists (src/app/http-routes.ts pairs each entry
 * with its handler), each handler names its own entry, and the status page leaves the
 * monitoring ones out of its request rates. A new route is a line here first.
 */

export type RouteMethod = 'get' | 'post' | 'ws'

export interface RouteSpec<M extends RouteMethod = RouteMethod> {
  readonly method: M
  readonly path: string
  /** Polled by monitoring (probes, the status page, Prometheus): not counted as traffic. */
  readonly monitoring: boolean
}

function route<M extends RouteMethod> (method: M, path: string, monitoring = false): RouteSpec<M> {
  return Object.freeze({ method, path, monitoring })
}

export const ROUTES = Object.freeze({
  register: route('post', '/api/auth/register'),
  login: route('post', '/api/auth/login'),
  me: route('get', '/api/auth/me'),
  createSession: route('post', '/api/chatbot/sessions'),
  listSessions: route('get', '/api/chatbot/sessions'),
  sessionMessages: route('get', '/api/chatbot/sessions/:id/messages'),
  chatMessages: route('post', '/api/chatbot/messages'),
  cancelChat: route('post', '/api/chatbot/messages/:request_id/cancel'),
  resumeStream: route('get', '/api/chatbot/streams/:request_id'),
  chatSocket: route('ws', '/api/chatbot/ws'),
  hintsSocket: route('ws', '/api/mqtt/ws/hints/:session_id'),
  health: route('get', '/api/health', true),
  mqttHealth: route('get', '/api/health/mqtt', true),
  workersHealth: route('get', '/api/health/workers', true),
  clusterHealth: route('get', '/api/health/cluster', true),
  livez: route('get', '/livez', true),
  readyz: route('get', '/readyz', true),
  metrics: route('get', '/metrics', true),
  statusPage: route('get', '/', true),
  statusPageAlias: route('get', '/status', true),
  statusApi: route('get', '/api/status', true),
  /** Test-only (TETHER_TEST_HOOKS): blocks the event loop on purpose. */
  blockEventLoop: route('post', '/__test/block-event-loop')
})

export type RouteName = keyof typeof ROUTES

/** Paths that monitoring polls: the status page's request rates leave them out. */
export const MONITORING_PATHS: ReadonlySet<string> = new Set(Object.values(ROUTES).filter((r) => r.monitoring).map((r) => r.path))

/** Every path and socket pattern, plus the fallback's label: the route labels there can be. */
export const ROUTE_LABELS: readonly string[] = Object.freeze([...new Set(Object.values(ROUTES).map((r) => r.path)), 'unmatched'])
