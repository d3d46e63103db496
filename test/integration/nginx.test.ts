/**
 * deploy/nginx/tether.conf in front of a real Tether: a real nginx (Debian's package) runs on
 * loopback as a child process with the shipped file as its site, only the upstream address,
 * the listen port and (derived by the file's own rule) the chat read timeout replaced. Chat,
 * the hints and chat WebSockets and an event stream must work through it, event by event, and
 * a slow answer must not be cut by the proxy, while a proxy timeout shorter than the answer
 * is shown to cut it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { createGunzip } from 'node:zlib'
import t, { type Test } from 'tap'
import { SETTINGS } from '../../src/config.js'
import { findExecutable, startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { freePort, canConnect } from '../fixtures/ports.js'
import { chunk, done, echo, startScriptedWorker, type ChatRequest, type Reply, type ScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, mqttPeer, untilHintsFlow, wsUrl } from '../fixtures/ws-client.js'
import { locationBlock, seconds, shippedSite, startNginx } from '../fixtures/nginx.js'
import { httpRequest, type HttpAnswer } from '../fixtures/http-request.js'

/**
 * The shipped file's rule (its comments): the chat route's proxy_read_timeout is
 * CHAT_TIMEOUT_MS plus 30 s for the database work around the deadline.
 */
const CHAT_READ_MARGIN_S = 30
const chatReadTimeoutS = (chatTimeoutMs: number): number => Math.ceil(chatTimeoutMs / 1000) + CHAT_READ_MARGIN_S

/** Small enough for a test; the worker's slow answer comes well inside it. */
const CHAT_TIMEOUT_MS = 8000
/** How long the slow worker takes: longer than the too-short proxy timeout below. */
const SLOW_ANSWER_MS = 6000
/** A proxy read timeout shorter than the slow answer: what the shipped rule prevents. */
const TOO_SHORT_READ_TIMEOUT_S = 3
/** The streaming worker holds its done back this long at most, waiting for the chunk to reach the client. */
const GATE_TIMEOUT_MS = 5000

function fallback (env: string): number {
  const setting = SETTINGS.find((s) => s.env === env)
  if (setting === undefined || typeof setting.fallback !== 'number') throw new Error(`no numeric default for ${env}`)
  return setting.fallback
}

type Answer = HttpAnswer

function request (port: number, method: string, path: string, options: { body?: string, headers?: Record<string, string> } = {}): Promise<Answer> {
  return httpRequest(port, method, path, options)
}

const template = shippedSite()

t.test('the shipped file keeps its timeouts above Tether\'s deadlines and its body limit at MAX_BODY_BYTES', async (t) => {
  const chatTimeoutMs = fallback('CHAT_TIMEOUT_MS')
  const chat = locationBlock(template, '= /api/chatbot/messages')
  t.equal(seconds(chat, 'proxy_read_timeout'), chatReadTimeoutS(chatTimeoutMs), 'the chat route\'s read timeout is CHAT_TIMEOUT_MS + 30 s')
  t.ok(seconds(chat, 'proxy_read_timeout') * 1000 > chatTimeoutMs, 'longer than CHAT_TIMEOUT_MS, so Tether\'s own 504 arrives first')
  t.match(chat, /^\s*proxy_buffering off;/m, 'event streams are not buffered')
  for (const ws of ['^~ /api/mqtt/ws/', '= /api/chatbot/ws']) {
    const block = locationBlock(template, ws)
    t.match(block, /proxy_set_header Upgrade \$http_upgrade;/, `${ws} forwards Upgrade`)
    t.match(block, /proxy_set_header Connection \$tether_connection_upgrade;/, `${ws} forwards Connection from the map`)
    t.ok(seconds(block, 'proxy_read_timeout') > chatTimeoutMs / 1000 && seconds(block, 'proxy_read_timeout') > 2 * fallback('WS_IDLE_TIMEOUT_S'), `${ws} read timeout is long`)
    t.ok(template.indexOf(`location ${ws}`) < template.indexOf('location /api/ {'), `${ws} comes before the general API location`)
  }
  t.match(template, /map \$http_upgrade \$tether_connection_upgrade/, 'the upgrade map')
  const limit = /client_max_body_size\s+(\d+)k;/.exec(template)
  t.equal(Number(limit?.[1]) * 1024, fallback('MAX_BODY_BYTES'), 'client_max_body_size matches MAX_BODY_BYTES')
})

const nginxBin = findExecutable('nginx')
if (nginxBin === undefined) {
  t.fail('nginx is not installed (no `nginx` on PATH or in /usr/sbin): apt-get install nginx; .ci/run installs it when it is missing')
} else {
  await throughNginx(nginxBin)
}

async function throughNginx (bin: string): Promise<void> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  // 32 chats of one user at once below: over the default per-user share.
  const gw = await startGateway(t, { MQTT_URL: broker.url, CHAT_TIMEOUT_MS: String(CHAT_TIMEOUT_MS), MAX_PENDING_PER_USER: '64' })

  // The streaming worker sends its chunk, then holds the done until the test has seen the
  // chunk arrive through nginx (or GATE_TIMEOUT_MS passes): a proxy that buffered the stream
  // would never let the chunk out before the done, and the test would say so.
  let openGate: () => void = () => {}
  let gateOpenedByClient = false
  let worker: ScriptedWorker | undefined
  const behaviour = async (request: ChatRequest): Promise<Reply[]> => {
    if (request.content === 'slow') {
      // The subject: a worker that takes its time.
      await delay(SLOW_ANSWER_MS)
      return [done(request, 'slow but whole')]
    }
    if (request.content === 'silent') return []
    if (request.content === 'stream') {
      const gate = new Promise<boolean>((resolve) => { openGate = () => { resolve(true) } })
      await (worker as ScriptedWorker).client.publishAsync(request.reply_to, JSON.stringify(chunk(request, 'first ')), { qos: 1 })
      const abort = new AbortController()
      gateOpenedByClient = await Promise.race([gate, delay(GATE_TIMEOUT_MS, false, { signal: abort.signal }).catch(() => false)])
      abort.abort()
      return [done(request, 'first second')]
    }
    return await echo(request)
  }
  worker = await startScriptedWorker({ url: broker.url, behaviour })
  t.teardown(() => worker?.stop())
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'the MQTT link to come up' })

  const upstream = `127.0.0.1:${gw.port}`
  const nginx = await startNginx(t, bin, { upstream, chatReadTimeoutS: chatReadTimeoutS(CHAT_TIMEOUT_MS) })
  const auth = { authorization: `Bearer ${gw.token}`, 'content-type': 'application/json' }
  const chatBody = async (key: string, content: string): Promise<string> => JSON.stringify({ session_id: await gw.sessionId(key), content })

  t.test('a chat through nginx answers 200 with the reply', async (t) => {
    const answer = await request(nginx.port, 'POST', '/api/chatbot/messages', { body: await chatBody('plain', 'hello there'), headers: auth })
    t.equal(answer.status, 200, answer.text)
    t.equal(answer.json?.reply?.content, 'echo: hello there')
    t.type(answer.headers['x-request-id'], 'string', 'Tether answered, not nginx')
  })

  t.test('a body of MAX_BODY_BYTES passes nginx; one byte more is 413 in Tether\'s error shape', async (t) => {
    const max = fallback('MAX_BODY_BYTES')
    const json = JSON.stringify({ title: 'padded' })
    const exact = await request(nginx.port, 'POST', '/api/chatbot/sessions', { body: json + ' '.repeat(max - json.length), headers: auth })
    t.equal(exact.status, 201, 'exactly MAX_BODY_BYTES reaches Tether and is accepted')
    const over = await request(nginx.port, 'POST', '/api/chatbot/sessions', { body: json + ' '.repeat(max - json.length + 1), headers: auth })
    t.equal(over.status, 413)
    t.equal(over.headers['x-request-id'], undefined, 'refused by nginx, before Tether')
    t.match(over.headers['content-type'], /^application\/json/)
    t.equal(over.json?.error, 'payload_too_large')
    t.type(over.json?.request_id, 'string')
  })

  t.test('the hints WebSocket works through nginx: a hint published on MQTT reaches the socket', async (t) => {
    const sessionId = await gw.sessionId('hints')
    const socket = await connect(t, wsUrl(nginx.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
    const peer = await mqttPeer(t, broker.url)
    await untilHintsFlow(peer, sessionId, [socket])
    await peer.publish(`llm/hints/${sessionId}`, JSON.stringify({ tip: 'through nginx' }))
    const hint = await socket.next('the hint through nginx', (f) => f?.type === 'hint' && f.data?.tip === 'through nginx')
    t.equal(hint.session_id, sessionId)
  })

  t.test('a WebSocket upgrade is logged without its query string: the token stays out of the access log', async (t) => {
    const sessionId = await gw.sessionId('hints-log')
    const socket = await connect(t, wsUrl(nginx.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
    socket.close()
    await waitFor(() => nginx.accessLog().includes(`/api/mqtt/ws/hints/${sessionId}`), { timeoutMs: 10_000, what: 'the upgrade in the access log' })
    t.notMatch(nginx.accessLog(), gw.token, 'no token in the log')
    t.notMatch(nginx.accessLog(), /token=/, 'no query string either')
  })

  t.test('with the upgrade map on every API location and upstream keepalive, 1,000 chats at c=32 get no 502', async (t) => {
    // nginx then sends `Connection: close` upstream with every plain request; Tether closes
    // after answering and must say so, or nginx reuses the closed connection (RFC 9112 9.6).
    const mapped = await startNginx(t, bin, { upstream, chatReadTimeoutS: chatReadTimeoutS(CHAT_TIMEOUT_MS), upgradeMapEverywhere: true })
    // One session per client loop: the per-session cap is not what is tested here.
    const bodies = await Promise.all(Array.from({ length: 32 }, async (_, i) => await chatBody(`mapped-${i}`, 'hello')))
    const statuses = new Map<number, number>()
    let next = 0
    const total = 1000
    await Promise.all(bodies.map(async (body) => {
      while (next < total) {
        next++
        const answer = await request(mapped.port, 'POST', '/api/chatbot/messages', { body, headers: auth })
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
      }
    }))
    t.same(Object.fromEntries(statuses), { 200: total }, 'every chat answered 200')
    // Cheaper requests come faster, so a closed connection is reused sooner after its close.
    const quick = new Map<number, number>()
    let sent = 0
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (sent < 3000) {
        sent++
        const answer = await request(mapped.port, 'POST', '/api/auth/login', { body: '{"username":1}', headers: { 'content-type': 'application/json' } })
        quick.set(answer.status, (quick.get(answer.status) ?? 0) + 1)
      }
    }))
    t.same(Object.fromEntries(quick), { 400: 3000 }, '3,000 quick requests: every one answered by Tether')
    t.notMatch(mapped.errorLog(), /upstream prematurely closed/, 'nginx never met a closed upstream connection')
  })

  t.test('the chat WebSocket works through nginx', async (t) => {
    const sessionId = await gw.sessionId('ws-chat')
    const socket = await connect(t, wsUrl(nginx.port, `/api/chatbot/ws?token=${gw.token}`))
    socket.send({ type: 'chat', id: 'c1', session_id: sessionId, content: 'over a socket' })
    const answer = await socket.next('done for c1', (f) => f?.id === 'c1' && (f.type === 'done' || f.type === 'error'))
    t.equal(answer.type, 'done', JSON.stringify(answer))
    t.equal(answer.content, 'echo: over a socket')
  })

  t.test('an event stream through nginx arrives event by event: the chunk before the done is sent', async (t) => {
    const body = await chatBody('stream', 'stream')
    const events: Array<{ name: string, data: any }> = []
    const status = await new Promise<number>((resolve, reject) => {
      // As a browser asks: compressed if possible (a compressor holds events back to fill its blocks).
      const headers = { ...auth, accept: 'text/event-stream', 'accept-encoding': 'gzip' }
      const req = http.request({ host: '127.0.0.1', port: nginx.port, method: 'POST', path: '/api/chatbot/messages', agent: false, headers }, (res) => {
        let buffer = ''
        const stream = res.headers['content-encoding'] === 'gzip' ? res.pipe(createGunzip()) : res
        stream.setEncoding('utf8')
        stream.on('data', (text: string) => {
          buffer += text
          let end: number
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end)
            buffer = buffer.slice(end + 2)
            const name = /^event: (.*)$/m.exec(block)?.[1] ?? 'message'
            const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? 'null')
            events.push({ name, data })
            if (name === 'chunk') openGate()
          }
        })
        stream.on('end', () => { resolve(res.statusCode ?? 0) })
        stream.on('error', reject)
      })
      req.on('error', reject)
      req.end(body)
    })
    t.equal(status, 200)
    t.ok(gateOpenedByClient, 'the chunk reached the client through nginx while the worker was still holding the done back')
    t.same(events.map((e) => e.name), ['start', 'chunk', 'done'])
    t.equal(events[2]?.data?.content, 'first second')
  })

  t.test('a slow answer is not cut by the proxy; a read timeout shorter than the answer would have cut it', async (t) => {
    const short = await startNginx(t, bin, { upstream, chatReadTimeoutS: TOO_SHORT_READ_TIMEOUT_S })
    const [whole, cut] = await Promise.all([
      request(nginx.port, 'POST', '/api/chatbot/messages', { body: await chatBody('slow-a', 'slow'), headers: auth }),
      request(short.port, 'POST', '/api/chatbot/messages', { body: await chatBody('slow-b', 'slow'), headers: auth })
    ])
    t.equal(whole.status, 200, `the shipped rule (read timeout ${chatReadTimeoutS(CHAT_TIMEOUT_MS)} s for CHAT_TIMEOUT_MS ${CHAT_TIMEOUT_MS}) lets it through`)
    t.equal(whole.json?.reply?.content, 'slow but whole', 'intact')
    t.ok(whole.ms >= SLOW_ANSWER_MS, `it did take its time (${Math.round(whole.ms)} ms)`)
    t.equal(cut.status, 504, `a ${TOO_SHORT_READ_TIMEOUT_S} s read timeout cuts it`)
    t.equal(cut.json, undefined, 'with nginx\'s own HTML page, not Tether\'s JSON')
    t.ok(cut.ms < SLOW_ANSWER_MS, `before the answer came (${Math.round(cut.ms)} ms)`)
  })

  t.test('a chat past CHAT_TIMEOUT_MS gets Tether\'s own 504, not nginx\'s', async (t) => {
    const answer = await request(nginx.port, 'POST', '/api/chatbot/messages', { body: await chatBody('silent', 'silent'), headers: auth })
    t.equal(answer.status, 504)
    t.equal(answer.json?.error, 'llm_timeout', 'Tether\'s error body came through')
    t.ok(answer.ms >= CHAT_TIMEOUT_MS, `at the deadline (${Math.round(answer.ms)} ms)`)
    t.notMatch(nginx.errorLog(), /upstream timed out/, 'nginx never gave up on Tether')
  })
}
