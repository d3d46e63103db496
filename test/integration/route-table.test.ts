import t from 'tap'
import { MONITORING_PATHS, ROUTES } from '../../src/http/route-table.js'
import { startGateway } from '../fixtures/gateway.js'

t.test('the server serves every HTTP route of the table, and only those', async (t) => {
  const gw = await startGateway(t, {})
  const unknown = await gw.request('GET', '/api/not-a-route')
  t.equal(unknown.status, 404, 'a path outside the table is 404')
  t.equal(unknown.json.error, 'not_found')
  for (const [name, route] of Object.entries(ROUTES)) {
    if (route.method === 'ws' || name === 'blockEventLoop') continue
    const path = route.path.replace(':id', '00000000-0000-4000-8000-000000000000').replace(':session_id', 's1')
    const answer = await gw.request(route.method.toUpperCase(), path, route.method === 'post' ? '{}' : undefined)
    // A route may answer 404 itself (an unknown session); the fallback's body is another one.
    t.not(answer.json?.error, 'not_found', `${route.method} ${route.path} is served (${answer.status})`)
    t.not(answer.status, 405, `${route.method} ${route.path} takes its method`)
  }
  const testHook = await gw.request('POST', ROUTES.blockEventLoop.path, '{}')
  t.equal(testHook.json?.error, 'not_found', 'the test hook is not served without TETHER_TEST_HOOKS')
})

t.test('monitoring routes are the probes, the metrics and the status page, nothing a user calls', async (t) => {
  t.same([...MONITORING_PATHS].sort(), ['/', '/api/health', '/api/health/cluster', '/api/health/mqtt', '/api/health/workers', '/api/status', '/livez', '/metrics', '/readyz', '/status'])
})
