/**
 * HTTP edges an unlucky client or proxy meets: a body far over MAX_BODY_BYTES must come back as
 * a 413, not a connection reset; a request that says `Connection: close` must be told the
 * connection closes (nginx with upstream keepalive otherwise reuses it and answers 502); and a
 * server-sent-event reader that stops reading must not make the gateway buffer a whole answer.
 */
import http from 'node:http'
import net from 'node:net'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { chunk, done, echo, startScriptedWorker, type ChatRequest } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

const broker = await startTestBroker()
t.teardown(() => broker.close())
const FLOOD_CHUNKS = 400
const FLOOD_CHUNK = 'x'.repeat(32 * 1024)
/** A long answer: 4 chunks of 1 MiB and a done of 4 MiB, each event far over SSE_MAX_BACKPRESSURE. */
const LONG_PART = 'y'.repeat(1024 * 1024)
const worker = await startScriptedWorker({
  url: broker.url,
  behaviour: (r: ChatRequest) => r.content === 'flood'
    ? [...Array.from({ length: FLOOD_CHUNKS }, () => chunk(r, FLOOD_CHUNK)), done(r, 'flooded')]
    : r.content === 'long'
      ? [...Array.from({ length: 4 }, () => chunk(r, LONG_PART)), done(r, LONG_PART.repeat(4))]
      : echo(r)
})
t.teardown(() => worker.stop())
const gw = await startGateway(t, { MQTT_URL: broker.url, SSE_MAX_BACKPRESSURE: '65536' })
await waitFor(() => gw.tether.link.isUp, { what: 'the MQTT link up' })

interface Posted { status: number, error: string | null, body: string }

/** One POST on its own connection, the whole body written at once, as a browser's upload is. */
function post (path: string, body: Buffer, headers: Record<string, string> = {}): Promise<Posted> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: gw.port, method: 'POST', path, agent: false, headers: { 'content-type': 'application/json', authorization: `Bearer ${gw.token}`, ...headers } }, (res) => {
      let text = ''
      res.on('data', (d: Buffer) => { text += d.toString() })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, error: null, body: text }) })
      res.on('error', (err) => { resolve({ status: res.statusCode ?? 0, error: err.message, body: text }) })
    })
    req.on('error', (err: NodeJS.ErrnoException) => { resolve({ status: 0, error: err.code ?? err.message, body: '' }) })
    req.end(body)
  })
}

/**
 * A client that sends its whole body before it reads (as curl and many upload libraries do):
 * what the server answered early waits unread in the client's kernel buffer, where a reset
 * from the server destroys it.
 */
function uploadThenRead (path: string, size: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(gw.port, '127.0.0.1')
    let data = ''
    let error = ''
    const timer = setTimeout(() => { socket.destroy(); resolve(`timeout ${data.slice(0, 40)}`) }, 30_000)
    socket.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message })
    socket.on('close', () => {
      clearTimeout(timer)
      const status = /^HTTP\/1\.1 (\d+)/.exec(data)?.[1]
      resolve(status === '413' && data.includes('payload_too_large') ? '413' : `${status ?? 'no answer'} ${error}`)
    })
    socket.pause()
    const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.token}\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`
    socket.write(Buffer.concat([Buffer.from(head), Buffer.alloc(size, 0x20)]), () => {
      socket.on('data', (d) => { data += d.toString() })
      socket.resume()
    })
  })
}

t.test('30 bodies of 1.5 and 10 MB all get their 413, none a connection reset, even from a client that reads only after sending', async (t) => {
  const outcomes: string[] = []
  for (let i = 0; i < 30; i++) {
    const path = i % 3 === 0 ? '/api/chatbot/sessions' : '/api/chatbot/messages'
    outcomes.push(await uploadThenRead(path, i % 2 === 0 ? 1.5 * 1024 * 1024 : 10 * 1024 * 1024))
  }
  t.same(outcomes, Array(30).fill('413'))
  const parallel = await Promise.all(Array.from({ length: 10 }, async () => await post('/api/chatbot/messages', Buffer.alloc(10 * 1024 * 1024, 0x20))))
  t.same(parallel.map((a) => a.status === 413 && a.error === null ? 413 : `${a.status} ${a.error ?? ''}`), Array(10).fill(413), 'and ten at once through node\'s http client')
})

t.test('a chunked body over the limit is drained and refused with 413 on a connection that stays usable', async (t) => {
  const socket = net.connect(gw.port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  let data = ''
  socket.on('data', (d) => { data += d.toString() })
  const part = 'a'.repeat(64 * 1024)
  socket.write(`POST /api/chatbot/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.token}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n`)
  for (let i = 0; i < 8; i++) socket.write(`${part.length.toString(16)}\r\n${part}\r\n`)
  socket.write('0\r\n\r\n')
  await waitFor(() => data.includes('payload_too_large'), { what: 'the 413' })
  t.match(data, /^HTTP\/1\.1 413 /)
  socket.write('GET /livez HTTP/1.1\r\nHost: x\r\n\r\n')
  await waitFor(() => /"status":"alive"/.test(data), { what: 'a second request on the same connection' })
})

t.test('a request with Connection: close is answered with Connection: close, then the connection closes', async (t) => {
  for (const [request, what] of [
    ['GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'a GET'],
    [`POST /api/chatbot/messages HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\nAuthorization: Bearer ${gw.token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(JSON.stringify({ session_id: await gw.sessionId('close'), content: 'bye' }))}\r\n\r\n${JSON.stringify({ session_id: await gw.sessionId('close'), content: 'bye' })}`, 'a chat']
  ] as const) {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(gw.port, '127.0.0.1')
      let data = ''
      const timer = setTimeout(() => { socket.destroy(); reject(new Error(`still open: ${data}`)) }, 10_000)
      socket.on('data', (d) => { data += d.toString() })
      socket.on('close', () => { clearTimeout(timer); resolve(data) })
      socket.write(request)
    })
    t.match(answer, /^HTTP\/1\.1 200 /, `${what} answered`)
    t.match(answer, /\r\nConnection: close\r\n/i, `${what} says Connection: close (RFC 9112 9.6)`)
  }
})

t.test('an event-stream reader that stops reading is cut off at SSE_MAX_BACKPRESSURE and its chat cancelled', async (t) => {
  const before = await gw.metric('tether_sse_slow_consumers_total')
  const body = JSON.stringify({ session_id: await gw.sessionId('flood'), content: 'flood' })
  const socket = net.connect(gw.port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  let received = 0
  socket.on('data', (d) => {
    received += d.length
    // Read the head, then nothing more: the kernel's buffers fill and uWS's backlog grows.
    socket.pause()
  })
  socket.write(`POST /api/chatbot/messages HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${gw.token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  await waitFor(async () => await gw.metric('tether_sse_slow_consumers_total') === before + 1, { timeoutMs: 30_000, what: 'the slow reader cut off' })
  await waitFor(() => gw.tether.pending.size === 0, { what: 'its chat cancelled' })
  t.ok(received < FLOOD_CHUNKS * FLOOD_CHUNK.length, `the reader had ${received} bytes of ${FLOOD_CHUNKS * FLOOD_CHUNK.length} when it was cut off`)
  const chat = await gw.chat('after-flood', 'still fine')
  t.equal(chat.status, 200, 'the gateway carries on')
})

t.test('a reader that keeps reading gets a long answer whole, though single events exceed SSE_MAX_BACKPRESSURE', async (t) => {
  const body = JSON.stringify({ session_id: await gw.sessionId('long'), content: 'long' })
  const events = await new Promise<Array<{ name: string, size: number }>>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: gw.port, method: 'POST', path: '/api/chatbot/messages', agent: false, headers: { authorization: `Bearer ${gw.token}`, 'content-type': 'application/json', accept: 'text/event-stream' } }, (res) => {
      let buffer = ''
      const seen: Array<{ name: string, size: number }> = []
      res.setEncoding('utf8')
      res.on('data', (text: string) => {
        buffer += text
        let end: number
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const name = /^event: (.*)$/m.exec(block)?.[1]
          // Comment lines (": ...") keep a backed-up stream draining; clients ignore them.
          if (name !== undefined) seen.push({ name, size: (/^data: (.*)$/m.exec(block)?.[1] ?? '').length })
        }
      })
      res.on('end', () => { resolve(seen) })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
  t.same(events.map((e) => e.name), ['start', 'chunk', 'chunk', 'chunk', 'chunk', 'done'])
  t.ok((events[5]?.size ?? 0) > 4 * 1024 * 1024, 'the done event carries the whole 4 MiB answer')
  t.equal(gw.tether.pending.size, 0)
})

