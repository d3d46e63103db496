import net from 'node:net'
import t from 'tap'
import { startGateway } from '../fixtures/gateway.js'
import { waitFor } from '../fixtures/wait-for.js'

function rawExchange (port: number, request: string, timeoutMs: number): Promise<{ data: string, closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const socket = net.connect(port, '127.0.0.1')
    let data = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`socket still open after ${timeoutMs} ms; got ${data.slice(0, 200)}`)) }, timeoutMs)
    socket.on('data', (d) => { data += d.toString() })
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(timer); resolve({ data, closedAfterMs: Date.now() - started }) })
    socket.write(request)
  })
}

t.test('more than 16 KB of request headers is 431 and the connection is closed', async (t) => {
  const gw = await startGateway(t, {})
  const big = `GET /livez HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 20 }, (_, i) => `X-Filler-${i}: ${'a'.repeat(1000)}\r\n`).join('')}\r\n`
  const answer = await rawExchange(gw.port, big, 5000)
  t.match(answer.data, /^HTTP\/1\.1 431 /)
  t.match(answer.data, /"error":"headers_too_large"/)
  const normal = await gw.request('GET', '/livez', undefined, { headers: { 'x-filler': 'a'.repeat(8000) } })
  t.equal(normal.status, 200, '8 KB of headers is fine')
})

// uWebSockets.js closes an HTTP connection idle for 10 s, checked on its 4 s timer tick, so
// the close comes 10 to 14 s after the last byte (docs/operations notes this bound).
t.test('a client trickling a request is disconnected by the idle timeout', async (t) => {
  const gw = await startGateway(t, {})
  const answer = await rawExchange(gw.port, 'GET /livez HTTP/1.1\r\n', 20_000)
  t.equal(answer.data, '', 'nothing answered to an incomplete request')
  t.ok(answer.closedAfterMs <= 14_500, `closed after ${answer.closedAfterMs} ms`)
})

t.test('CORS headers go only to configured origins, and preflight is answered', async (t) => {
  const gw = await startGateway(t, { CORS_ORIGINS: 'https://app.example' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  const allowed = await gw.request('GET', '/livez', undefined, { headers: { origin: 'https://app.example' } })
  t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example')
  const other = await gw.request('GET', '/livez', undefined, { headers: { origin: 'https://evil.example' } })
  t.equal(other.headers['access-control-allow-origin'], undefined)
  const preflight = await gw.request('OPTIONS', '/api/chatbot/messages', undefined, { headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } })
  t.equal(preflight.status, 204)
  t.match(String(preflight.headers['access-control-allow-methods']), /POST/)
})

t.test('the embedded broker moves to a free port when its port is taken, and says which', async (t) => {
  const blocker = net.createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const taken = (blocker.address() as net.AddressInfo).port
  const gw = await startGateway(t, { EMBEDDED_MQTT_PORT: String(taken) })
  t.not(new URL(gw.tether.mqttUrl).port, String(taken))
  await waitFor(() => gw.tether.link.isUp, { what: 'link up on the fallback port' })
  const chat = await gw.chat('demo', 'hi')
  t.equal(chat.status, 200)
  t.equal(chat.json.reply.content, '[demo responder] You said: hi', 'the demo responder answers, labelled')
})
