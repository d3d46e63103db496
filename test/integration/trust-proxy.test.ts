import t from 'tap'
import { startGateway } from '../fixtures/gateway.js'

async function failedLogin (gw: Awaited<ReturnType<typeof startGateway>>, username: string, realIp: string): Promise<number> {
  const a = await gw.request('POST', '/api/auth/login', JSON.stringify({ username, password: 'wrong password!' }), { anonymous: true, headers: { 'x-real-ip': realIp } })
  return a.status
}

t.test('with TRUST_PROXY the per-address login limit follows X-Real-IP, so clients behind one proxy are told apart', async (t) => {
  const gw = await startGateway(t, { TRUST_PROXY: '1', LOGIN_MAX_FAILURES: '2', WORKER_TASK_TIMEOUT_MS: '60000' })
  t.equal(await failedLogin(gw, 'nobody-1', '192.0.2.10'), 401)
  t.equal(await failedLogin(gw, 'nobody-2', '192.0.2.10'), 401)
  t.equal(await failedLogin(gw, 'nobody-3', '192.0.2.10'), 429, 'the third failure from that client address is limited')
  t.equal(await failedLogin(gw, 'nobody-4', '192.0.2.11'), 401, 'another client behind the same proxy is not')
})

t.test('without TRUST_PROXY the header is ignored: the socket address counts', async (t) => {
  const gw = await startGateway(t, { LOGIN_MAX_FAILURES: '2', WORKER_TASK_TIMEOUT_MS: '60000' })
  t.equal(await failedLogin(gw, 'nobody-1', '192.0.2.10'), 401)
  t.equal(await failedLogin(gw, 'nobody-2', '192.0.2.11'), 401)
  t.equal(await failedLogin(gw, 'nobody-3', '192.0.2.12'), 429, 'a forged X-Real-IP does not escape the limit')
})
