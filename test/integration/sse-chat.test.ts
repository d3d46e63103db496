/**
 * POST /api/chatbot/messages with `Accept: text/event-stream`: the chat streamed as
 * server-sent events (docs/websocket.md, "Server-sent events"), against the embedded broker
 * or (MQTT_TEST_URL set) a private Mosquitto.
 */
import http from 'node:http'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { chunk, done, echo, failure, pause, startScriptedWorker, type Behaviour } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { sseParser, type SseEvent } from '../fixtures/sse-events.js'

const BASE_ENV = { THREAD_TASK_TIMEOUT_MS: '60000' }
const CHAT_TIMEOUT_MS = 1500
const GRACE_MS = 300

/** Scripted by content: `fail…` a chunk then a worker error, `hang…` a chunk then silence, `silent…` nothing; else echo. */
const dispatch: Behaviour = (request) => {
  if (request.content.startsWith('fail')) return [chunk(request, 'so far '), chunk(request, 'so good '), failure(request, 'model exploded')]
  if (request.content.startsWith('hang')) return [chunk(request, 'partial ')]
  if (request.content.startsWith('silent')) return []
  if (request.content.startsWith('slow')) {
    const deltas = Array.from({ length: 20 }, (_, i) => `c${i + 1} `)
    return [...deltas.flatMap((d, i) => [chunk(request, d, i + 1), pause(15)]), done(request, deltas.join(''))]
  }
  return echo(request)
}

const broker = await startTestBroker()
t.teardown(() => broker.close())
const worker = await startScriptedWorker({ url: broker.url, behaviour: dispatch })
t.teardown(() => worker.stop())
const gw = await startGateway(t, { ...BASE_ENV, MQTT_URL: broker.url, CHAT_TIMEOUT_MS: String(CHAT_TIMEOUT_MS), STREAM_RESUME_GRACE_MS: String(GRACE_MS) })
await waitFor(() => gw.tether.link.isUp, { what: 'link up' })


interface Stream {
  /** Status and headers, once they arrive. */
  head: Promise<{ status: number, headers: http.IncomingHttpHeaders }>
  /** Events parsed so far (a response that is not event-stream stays in `text`). */
  events: SseEvent[]
  readonly text: string
  /** Resolves when the response ends or the connection closes. */
  ended: Promise<void>
  next: (what: string, match: (e: SseEvent) => boolean, timeoutMs?: number) => Promise<SseEvent>
  /** Hangs up mid-stream, as a closed browser tab does. */
  abort: () => void
}

function stream (g: Gateway, body: unknown, options: { token?: string, anonymous?: boolean, resume?: { requestId: string, lastEventId?: string } } = {}): Stream {
  const headers: Record<string, string> = { accept: 'text/event-stream', 'content-type': 'application/json' }
  if (options.resume?.lastEventId !== undefined) headers['last-event-id'] = options.resume.lastEventId
  const token = options.token ?? (options.anonymous === true ? undefined : g.token)
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const events: SseEvent[] = []
  let text = ''
  const wake = new Set<() => void>()
  let finished = false
  let resolveEnded!: () => void
  const ended = new Promise<void>((resolve) => { resolveEnded = resolve })
  const finish = (): void => { if (!finished) { finished = true; resolveEnded(); for (const w of wake) w() } }
  const req = options.resume === undefined
    ? http.request({ host: '127.0.0.1', port: g.port, method: 'POST', path: '/api/chatbot/messages', agent: false, headers })
    : http.request({ host: '127.0.0.1', port: g.port, method: 'GET', path: `/api/chatbot/streams/${options.resume.requestId}`, agent: false, headers })
  const head = new Promise<{ status: number, headers: http.IncomingHttpHeaders }>((resolve, reject) => {
    req.on('response', (res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers })
      const feed = sseParser(events)
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        text += d
        feed(d)
        for (const w of wake) w()
      })
      res.on('end', finish)
      res.on('close', finish)
      res.on('error', finish)
    })
    req.on('error', (err) => { finish(); reject(err) })
  })
  head.catch(() => {})
  req.end(options.resume === undefined ? JSON.stringify(body) : undefined)
  return {
    head,
    events,
    get text () { return text },
    ended,
    next (what, match, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = events.find(match)
          if (found !== undefined) { done(); resolve(found); return }
          if (finished) { done(); reject(new Error(`stream ended while waiting for ${what}: ${text.slice(0, 300)}`)) }
        }
        const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for ${what}: ${text.slice(0, 300)}`)) }, timeoutMs)
        const done = (): void => { clearTimeout(timer); wake.delete(check) }
        wake.add(check)
        check()
      })
    },
    abort () { req.destroy() }
  }
}

async function counter (name: string, labels: Record<string, string>): Promise<() => Promise<number>> {
  const before = await gw.metric(name, labels)
  return async () => (await gw.metric(name, labels)) - before
}

t.test('Accept: text/event-stream streams chunk events and then done with the stored message_id', async (t) => {
  const sessionId = await gw.sessionId('sse')
  const s = stream(gw, { session_id: sessionId, content: 'hello there' })
  const { status, headers } = await s.head
  t.equal(status, 200)
  t.match(headers['content-type'], /^text\/event-stream/)
  t.equal(headers['cache-control'], 'no-cache')
  t.equal(headers['x-accel-buffering'], 'no', 'nginx told not to buffer')
  await s.ended
  t.same(s.events.map((e) => e.event), ['start', 'chunk', 'chunk', 'chunk', 'done'], 'start, chunks, then done, then the end of the response')
  t.same(s.events[0]?.data, { request_id: headers['x-request-id'] }, 'start names the request, as X-Request-Id does')
  t.same(s.events.filter((e) => e.event === 'chunk').map((e) => [e.id, e.data]), [['1', { delta: 'echo: ', seq: 1 }], ['2', { delta: 'hello ', seq: 2 }], ['3', { delta: 'there', seq: 3 }]], 'each chunk\'s id is its seq')
  const done = s.events[4]?.data
  t.equal(done.session_id, sessionId)
  t.equal(done.content, 'echo: hello there')
  t.type(done.latency_ms, 'number')
  t.match(s.text, /^event: start\ndata: \{"request_id":"[^"]+"\}\n\nid: 1\nevent: chunk\ndata: \{"delta":"echo: ","seq":1\}\n\n/, 'the wire format: id line, event line, data line, blank line')
  const history = await gw.request('GET', `/api/chatbot/sessions/${sessionId}/messages`)
  const stored = history.json.find((m: any) => m.id === done.message_id)
  t.same({ role: stored?.role, content: stored?.content }, { role: 'assistant', content: 'echo: hello there' }, 'message_id names the stored reply')
})

t.test('errors before the first event are plain JSON errors with their status', async (t) => {
  const other = await gw.newUser('sse-other')
  const theirs = await gw.request('POST', '/api/chatbot/sessions', JSON.stringify({ title: 'theirs' }), { token: other.token })
  const mine = await gw.sessionId('sse-errors')
  const cases: Array<[string, Stream, number, string]> = [
    ['no token', stream(gw, { session_id: mine, content: 'hi' }, { anonymous: true }), 401, 'unauthorized'],
    ['a forged token', stream(gw, { session_id: mine, content: 'hi' }, { token: 'a.b.c' }), 401, 'unauthorized'],
    ['another user\'s session', stream(gw, { session_id: theirs.json.id, content: 'hi' }), 404, 'session_not_found'],
    ['a malformed session id', stream(gw, { session_id: 'a+b', content: 'hi' }), 400, 'invalid_request'],
    ['numeric content', stream(gw, { session_id: mine, content: 1 }), 400, 'invalid_request']
  ]
  for (const [name, s, status, code] of cases) {
    const head = await s.head
    await s.ended
    t.equal(head.status, status, `${name}: ${status}`)
    t.match(head.headers['content-type'], /^application\/json/, `${name}: JSON, not an event stream`)
    t.equal(JSON.parse(s.text).error, code, `${name}: ${code}`)
    t.same(s.events, [], `${name}: no events`)
  }
})

t.test('a silent worker ends the stream, which has started, with an error event llm_timeout', async (t) => {
  const s = stream(gw, { session_id: await gw.sessionId('sse-silent'), content: 'silent please' })
  const head = await s.head
  await s.ended
  t.equal(head.status, 200)
  t.same(s.events.map((e) => [e.event, e.data.error]), [['start', undefined], ['error', 'llm_timeout']])
})

t.test('a worker error after chunks is an error event and the stream ends', async (t) => {
  const s = stream(gw, { session_id: await gw.sessionId('sse-fail'), content: 'fail please' })
  t.equal((await s.head).status, 200)
  await s.ended
  t.same(s.events.map((e) => e.event), ['start', 'chunk', 'chunk', 'error'])
  const error = s.events[3]?.data
  t.equal(error.error, 'llm_error')
  t.notMatch(error.message, /model exploded/, 'the worker\'s text stays in the logs')
  t.type(error.request_id, 'string')
  t.equal(gw.tether.pending.size, 0)
})

t.test('a client that disconnects mid-stream and does not come back within the grace has its request cancelled, and the worker told', async (t) => {
  const cancelled = await counter('tether_chat_requests_total', { outcome: 'cancelled' })
  const s = stream(gw, { session_id: await gw.sessionId('sse-gone'), content: 'hang on' })
  await s.next('the first chunk', (e) => e.event === 'chunk')
  const requestId = s.events[0]?.data.request_id as string
  t.equal(gw.tether.pending.size, 1, 'in flight while streaming')
  s.abort()
  await waitFor(() => gw.tether.pending.size === 0, { timeoutMs: CHAT_TIMEOUT_MS - 200, what: 'the request cancelled (after the grace, before its deadline)' })
  await waitFor(async () => await cancelled() === 1, { timeoutMs: 2000, what: 'counted as cancelled' })
  await waitFor(() => worker.cancels.some((c) => c.request_id === requestId), { what: 'the worker told' })
  t.equal(worker.cancels.find((c) => c.request_id === requestId)?.reason, 'client_gone')
})

t.test('a stream resumed with Last-Event-ID after a disconnect continues where it was: no gap, no repeat', async (t) => {
  const s = stream(gw, { session_id: await gw.sessionId('sse-resume'), content: 'slow please' })
  await s.next('chunk 3', (e) => e.event === 'chunk' && e.data.seq === 3)
  const requestId = s.events[0]?.data.request_id as string
  const firstThree = s.events.filter((e) => e.event === 'chunk' && e.data.seq <= 3).map((e) => e.data.delta as string)
  s.abort()
  const again = stream(gw, null, { resume: { requestId, lastEventId: '3' } })
  t.equal((await again.head).status, 200)
  await again.ended
  const chunks = again.events.filter((e) => e.event === 'chunk')
  t.same(chunks.map((e) => e.id), Array.from({ length: 17 }, (_, i) => String(i + 4)), 'ids 4 to 20, each once')
  const end = again.events.at(-1)
  t.equal(end?.event, 'done')
  t.equal([...firstThree, ...chunks.map((e) => e.data.delta)].join(''), end?.data.content)
})

t.test('resume and cancel refuse what is not the caller\'s, unknown ids and bad Last-Event-ID with clear 4xx', async (t) => {
  const s = stream(gw, { session_id: await gw.sessionId('sse-refuse'), content: 'hello' })
  await s.ended
  const requestId = s.events[0]?.data.request_id as string
  const other = await gw.newUser('sse-stranger')
  const theirs = stream(gw, null, { resume: { requestId }, token: other.token })
  t.equal((await theirs.head).status, 404)
  await theirs.ended
  t.equal(JSON.parse(theirs.text).error, 'stream_not_found')
  const bad = stream(gw, null, { resume: { requestId, lastEventId: 'x' } })
  t.equal((await bad.head).status, 400)
  const beyond = stream(gw, null, { resume: { requestId, lastEventId: '99' } })
  t.equal((await beyond.head).status, 400)
  const cancelTheirs = await gw.request('POST', `/api/chatbot/messages/${requestId}/cancel`, '', { token: other.token })
  t.same([cancelTheirs.status, cancelTheirs.json.error], [404, 'stream_not_found'])
  const settled = await gw.request('POST', `/api/chatbot/messages/${requestId}/cancel`, '')
  t.same([settled.status, settled.json.error], [409, 'already_settled'])
  const unknown = await gw.request('POST', '/api/chatbot/messages/00000000-0000-4000-8000-000000000000/cancel', '')
  t.same([unknown.status, unknown.json.error], [404, 'stream_not_found'])
})

t.test('POST .../cancel stops a stream in flight: 200, the stream ends with error cancelled, the worker is told', async (t) => {
  const s = stream(gw, { session_id: await gw.sessionId('sse-stop'), content: 'slow please' })
  await s.next('chunk 2', (e) => e.event === 'chunk' && e.data.seq === 2)
  const requestId = s.events[0]?.data.request_id as string
  const answer = await gw.request('POST', `/api/chatbot/messages/${requestId}/cancel`, '')
  t.same([answer.status, answer.json], [200, { request_id: requestId, status: 'cancelled' }])
  await s.ended
  t.equal(s.events.at(-1)?.event, 'error')
  t.equal(s.events.at(-1)?.data.error, 'cancelled')
  await waitFor(() => worker.cancels.some((c) => c.request_id === requestId && c.reason === 'client_cancelled'), { what: 'the worker told' })
})

t.test('with the broker link down the answer is a plain 503 llm_unavailable with Retry-After', async (t) => {
  const sessionId = await gw.sessionId('sse-down')
  await worker.stop()
  await broker.kill()
  await waitFor(() => !gw.tether.link.isUp, { what: 'the link noticed the broker gone' })
  const s = stream(gw, { session_id: sessionId, content: 'anyone?' })
  const head = await s.head
  await s.ended
  t.equal(head.status, 503)
  t.match(head.headers['content-type'], /^application\/json/)
  t.equal(JSON.parse(s.text).error, 'llm_unavailable')
  t.ok(Number(head.headers['retry-after']) >= 1, 'with Retry-After')
})
