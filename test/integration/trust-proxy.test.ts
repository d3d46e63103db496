import t from 'tap'
import { startGateway } from '../fixtures/gateway.js'

async function failedLogin (gw: Awaited<ReturnType<typeof startGateway>>, username: string, realIp: string): Promise<number> {
  const a = await gw.request('POST', '/api/auth/login', JSON.stringify({ username, password: 'wrong password!' }), { anonymous: true, headers: { 'x-real-ip': realIp } })
  return a.status
}

t.test('with TRUST_PROXY the per-address login limit follows X-Real-IP, so clients behind one proxy are told apart', async (t) => {
  const gw = await startGateway(t, { TRUST_PROXY: '1', LOGIN_MAX_FAILURES: '2', THREAD_TASK_TIMEOUT_MS: '60000' })
  t.equal(await failedLogin(gw, 'nobody-1', '192.0.2.10'), 401)
  t.equal(await failedLogin(gw, 'nobody-2', '192.0.2.10'), 401)
  t.equal(await failedLogin(gw, 'nobody-3', '192.0.2.10'), 429, 'the third failure from that client address is limited')
  t.equal(await failedLogin(gw, 'nobody-4', '192.0.2.11'), 401, 'another client behind the same proxy is not')
})

t.test('without TRUST_PROXY the header is ignored: the socket address counts', async (t) => {
  const gw = await startGateway(t, { LOGIN_MAX_FAILURES: '2', THREAD_TASK_TIMEOUT_MS: '60000' })
  t.equal(await failedLogin(gw, 'nobody-1', '192.0.2.10'), 401)
  t.equal(await failedLogin(gw, 'nobody-2', '192.0.2.11'), 401)
  t.equal(await failedLogin(gw, 'nobody-3', '192.0.2.12'), 429, 'a forged X-Real-IP does not escape the limit')
})

t.test('a peer that is not a listed proxy cannot choose its address with X-Real-IP, even with TRUST_PROXY on', async (t) => {
  // The tests connect from 127.0.0.1; only 10.9.8.7 is trusted, so the header is ignored.
  const gw = await startGateway(t, { TRUST_PROXY: '10.9.8.7', LOGIN_MAX_FAILURES: '2' })
  const statuses = []
  for (let i = 0; i < 14; i++) statuses.push(await failedLogin(gw, `nobody-${i}`, `192.0.2.${i + 1}`))
  t.same(statuses.slice(0, 2), [401, 401])
  t.same(statuses.slice(2), Array(12).fill(429), '14 failures with 14 different headers meet the per-address limit after 2')
})

t.test('from a trusted proxy, a header that is not one valid address counts as the proxy\'s own', async (t) => {
  const gw = await startGateway(t, { TRUST_PROXY: '127.0.0.0/8', LOGIN_MAX_FAILURES: '2' })
  t.equal(await failedLogin(gw, 'nobody-1', '192.0.2.10, 198.51.100.1'), 401)
  t.equal(await failedLogin(gw, 'nobody-2', 'not an address'), 401)
  t.equal(await failedLogin(gw, 'nobody-3', ''), 429, 'all three shared the proxy\'s bucket')
  t.equal(await failedLogin(gw, 'nobody-4', '192.0.2.10'), 401, 'a valid header still names its client')
})
