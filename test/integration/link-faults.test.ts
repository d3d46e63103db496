/**
 * The failures Tether exists to survive, against the embedded broker or (MQTT_TEST_URL set) a
 * private real Mosquitto: a broker that crashes and comes back, a broker that freezes with its
 * sockets open, an idle half-open link, and a broker that stays away past the retry budget.
 */
import t from 'tap'
import { startTestBroker, type TestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { echo, silent, startScriptedWorker, type Behaviour } from '../fixtures/scripted-worker.js'
import { startTcpProxy } from '../fixtures/tcp-proxy.js'
import { waitFor } from '../fixtures/wait-for.js'

const FAST_LINK = {
  MQTT_BACKOFF_BASE_MS: '50',
  MQTT_BACKOFF_CAP_MS: '800',
  MQTT_CONNECT_TIMEOUT_MS: '1000',
  MQTT_MAX_RECONNECT_ATTEMPTS: '100'
}

async function worker (t: { teardown: (fn: () => unknown) => void }, broker: TestBroker, behaviour: Behaviour = echo): Promise<void> {
  const w = await startScriptedWorker({ url: broker.url, behaviour })
  t.teardown(() => w.stop())
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

t.test('broker killed and restarted while chats flow: 503 at once during the outage, back within the backoff bound, nothing left pending', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  await worker(t, broker)
  // A cap well above the flow's: this test is about the link, not the per-session cap.
  const gw = await startGateway(t, { MQTT_URL: broker.url, ...FAST_LINK, CHAT_TIMEOUT_MS: '5000', MAX_PENDING_PER_SESSION: '100' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })

  // A bounded flow of chats, each session at most one in flight.
  const answers: Promise<HttpAnswer>[] = []
  let answered = 0
  let flowing = true
  for (let k = 0; k < 8; k++) await gw.sessionId(`flow-${k}`)
  const flow = (async () => {
    for (let i = 0; i < 400 && flowing; i++) {
      answers.push(gw.chat(`flow-${i % 8}`, `message ${i}`).then((a) => { if (a.status === 200) answered++; return a }))
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  await waitFor(() => answered >= 10, { what: 'traffic flowing' })

  await broker.kill()
  await waitFor(() => !gw.tether.link.isUp, { timeoutMs: 3000, what: 'link noticed the crash' })

  const during: HttpAnswer[] = []
  for (let i = 0; i < 9; i++) during.push(await gw.chat('outage', `during ${i}`))
  for (const a of during) {
    t.equal(a.status, 503, 'chat during the outage is 503')
    t.equal(a.json.error, 'llm_unavailable')
    t.ok(Number(a.headers['retry-after']) >= 1, 'with Retry-After')
  }
  const typical = median(during.map((a) => a.ms))
  t.ok(typical < 50, `answered at once, not queued (median ${typical.toFixed(1)} ms)`)
  t.ok(Math.max(...during.map((a) => a.ms)) < 1000, 'none waited for a timeout')

  // Stop the flow before the broker returns: a chat published after the link is back but
  // before the worker has resubscribed has no worker, and would (rightly) end 504.
  flowing = false
  await flow
  const settled = await Promise.all(answers)
  for (const a of settled) t.ok(a.status === 200 || a.status === 503, `chat in the flow ended 200 or 503 (got ${a.status})`)
  t.ok(settled.some((a) => a.status === 200), 'some chats were answered before the crash')

  const restartedAt = Date.now()
  await broker.restart()
  await worker(t, broker)
  // The longest wait is one capped backoff plus one connection attempt.
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 800 + 1000 + 1000, what: 'link back after the broker returned' })
  t.ok(Date.now() - restartedAt <= 800 + 1000 + 1000, 'reconnected within the backoff bound')

  const after = await gw.chat('after', 'back again')
  t.equal(after.status, 200, 'chats work again')
  t.equal(gw.tether.pending.size, 0, 'nothing pending')
  t.ok(await gw.metric('tether_mqtt_reconnects_total') >= 1, 'reconnect counted')
})

t.test('a frozen broker with chats in flight is detected within stale-after plus probe timeout, and the chats get 503 then', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  await worker(t, broker, silent)
  const staleAfter = 400
  const probe = 300
  const gw = await startGateway(t, { MQTT_URL: broker.url, ...FAST_LINK, MQTT_STALE_AFTER_MS: String(staleAfter), MQTT_PROBE_TIMEOUT_MS: String(probe), CHAT_TIMEOUT_MS: '20000' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })

  await broker.freeze()
  t.teardown(() => broker.thaw())
  const frozenAt = Date.now()
  const answer = await gw.chat('s1', 'anyone there?')
  const detectedMs = Date.now() - frozenAt
  t.equal(answer.status, 503)
  t.equal(answer.json.error, 'llm_unavailable')
  t.ok(detectedMs < staleAfter + probe + 1500, `answered after ${detectedMs} ms, not at the 20 s deadline`)
  t.ok(detectedMs >= staleAfter, 'not before the link had been silent for MQTT_STALE_AFTER_MS')
  t.equal(gw.tether.pending.size, 0)
  t.match(gw.tether.link.recentTransitions().map((x) => x.to), ['connected', 'stale', 'reconnecting'])

  await broker.thaw()
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 800 + 1000 + 2000, what: 'reconnected once the broker answers' })
})

t.test('an idle half-open link is detected within 1.5 keepalive periods and rebuilt when the network returns', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: broker.port })
  t.teardown(() => proxy.close())
  const gw = await startGateway(t, { MQTT_URL: proxy.url, ...FAST_LINK, MQTT_KEEPALIVE_S: '1', MQTT_PROBE_TIMEOUT_MS: '300' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })

  proxy.pause()
  const pausedAt = Date.now()
  await waitFor(() => gw.tether.link.state === 'reconnecting' || gw.tether.link.state === 'connecting', { timeoutMs: 3000, what: 'half-open link detected' })
  const detectedMs = Date.now() - pausedAt
  t.ok(detectedMs <= 1500 + 250, `detected after ${detectedMs} ms (keepalive 1 s x 1.5 = 1500 ms)`)
  t.equal((await gw.request('GET', '/readyz')).status, 503, 'not ready while the link is down')

  proxy.resume()
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 800 + 1000 + 2000, what: 'link rebuilt after the network returned' })
  t.equal((await gw.request('GET', '/readyz')).status, 200)
})

t.test('past the retry budget the link gives up loudly, keeps retrying at the cap, and recovers', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const gw = await startGateway(t, {
    MQTT_URL: broker.url,
    MQTT_BACKOFF_BASE_MS: '10',
    MQTT_BACKOFF_CAP_MS: '300',
    MQTT_CONNECT_TIMEOUT_MS: '500',
    MQTT_MAX_RECONNECT_ATTEMPTS: '2'
  })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  await broker.kill()
  await waitFor(() => gw.tether.link.state === 'givingUp', { timeoutMs: 5000, what: 'givingUp' })

  const health = await gw.request('GET', '/api/health')
  t.equal(health.status, 503)
  t.equal(health.json.status, 'unhealthy')
  t.equal(health.json.mqtt.state, 'givingUp')
  t.match(health.json.issues.join(' '), /giving up/)
  const chat = await gw.chat('s1', 'hi')
  t.equal(chat.status, 503)
  t.equal(chat.json.error, 'llm_unavailable')
  t.ok(Number(chat.headers['retry-after']) >= 1)
  t.equal(await gw.metric('tether_mqtt_link_state', { state: 'givingUp' }), 1)

  await broker.restart()
  await worker(t, broker)
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 300 + 500 + 2000, what: 'recovered from givingUp' })
  const healthy = await gw.request('GET', '/api/health')
  t.equal(healthy.json.status, 'healthy')
  t.equal((await gw.chat('s1', 'hi again')).status, 200)
})

t.test('graceful stop lets in-flight chats finish within the grace, answers the rest 503 and refuses new ones', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  // Answers "quick" after 100 ms and never answers "never".
  await worker(t, broker, async (r) => {
    if (r.content !== 'quick') return []
    await new Promise((resolve) => setTimeout(resolve, 100))
    return echo(r)
  })
  const gw: Gateway = await startGateway(t, { MQTT_URL: broker.url, SHUTDOWN_GRACE_MS: '600' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  const quick = gw.chat('a', 'quick')
  const never = gw.chat('b', 'never')
  await waitFor(() => gw.tether.pending.size === 2, { what: 'two in flight' })

  const stopping = gw.tether.stop()
  const ready = await gw.request('GET', '/readyz')
  t.equal(ready.status, 503, 'readiness turns 503 at once')
  const refused = await gw.chat('c', 'too late')
  t.equal(refused.status, 503)
  t.equal(refused.json.error, 'shutting_down')

  t.equal((await quick).status, 200, 'in-flight chat finished within the grace')
  const late = await never
  t.equal(late.status, 503)
  t.equal(late.json.error, 'shutting_down')
  await stopping
  t.equal(gw.tether.link.state, 'closed')
})

t.test('chats sent while a probe runs (stale) are accepted, and answered once the probe succeeds', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  await worker(t, broker)
  // A long probe timeout: the broker is thawed well within it.
  const gw = await startGateway(t, { MQTT_URL: broker.url, ...FAST_LINK, MQTT_STALE_AFTER_MS: '300', MQTT_PROBE_TIMEOUT_MS: '4000', CHAT_TIMEOUT_MS: '20000', MAX_PENDING_PER_SESSION: '10' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  await broker.freeze()
  t.teardown(() => broker.thaw())
  const first = gw.chat('probe', 'before the probe')
  await waitFor(() => gw.tether.link.state === 'stale', { what: 'the link probed (stale)' })
  t.ok(gw.tether.link.isUp, 'a stale link carries chats (carriesChats)')
  const ready = await gw.request('GET', '/readyz')
  t.equal(ready.status, 200, '/readyz agrees: ready while probing')
  const during = gw.chat('probe', 'during the probe')
  await waitFor(() => gw.tether.pending.size === 2, { what: 'the chat sent during the probe accepted and in flight' })
  await broker.thaw()
  const answers = await Promise.all([first, during])
  t.same(answers.map((a) => a.status), [200, 200], 'both answered once the probe succeeded')
  t.equal(answers[1]?.json.reply.content, 'echo: during the probe')
  t.match(gw.tether.link.recentTransitions().map((x) => x.to), ['connected', 'stale', 'connected'])
})

t.test('MQTT_URL with two brokers: the link starts on a live one, and when it dies moves to the other; chats flow on both', async (t) => {
  const a = await startTestBroker({ kind: 'aedes' })
  t.teardown(() => a.close())
  const b = await startTestBroker({ kind: 'aedes' })
  t.teardown(() => b.close())
  // One worker on each node, as a cluster's workers would be spread.
  await worker(t, a)
  await worker(t, b)
  const gw = await startGateway(t, { MQTT_URL: `${a.url}, ${b.url}`, MQTT_PROTOCOL: '3.1.1', ...FAST_LINK })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  t.equal(gw.tether.link.broker, `127.0.0.1:${a.port}`, 'the first node first')
  t.equal((await gw.chat('nodes', 'on a')).status, 200)
  t.equal((await gw.request('GET', '/api/health/mqtt')).json.broker, `127.0.0.1:${a.port}`)
  await a.kill()
  await waitFor(() => gw.tether.link.isUp && gw.tether.link.broker === `127.0.0.1:${b.port}`, { timeoutMs: 10_000, what: 'the link on the second node' })
  t.equal((await gw.chat('nodes', 'on b')).status, 200, 'chats flow through the other node')
})

t.test('MQTT_URL with a dead node first: the next attempt goes to the live one', async (t) => {
  const live = await startTestBroker({ kind: 'aedes' })
  t.teardown(() => live.close())
  const dead = await startTestBroker({ kind: 'aedes' })
  await dead.close()
  await worker(t, live)
  const gw = await startGateway(t, { MQTT_URL: `${dead.url},${live.url}`, MQTT_PROTOCOL: '3.1.1', ...FAST_LINK })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 10_000, what: 'link up on the live node' })
  t.equal(gw.tether.link.broker, `127.0.0.1:${live.port}`)
  const hello = await gw.chat('dead-first', 'hello')
  t.equal(hello.status, 200, hello.text)
})
