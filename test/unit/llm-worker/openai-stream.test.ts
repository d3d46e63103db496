import { SimulatedClock } from 'xstate'
import t from 'tap'
import { buildMessages, createOpenAiUpstream, interpretData, streamDeltas, UpstreamError } from '../../../src/llm-worker/openai-stream.js'

async function collect (iterable: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = []
  for await (const x of iterable) out.push(x)
  return out
}

async function * bytes (...pieces: Array<string | Uint8Array>): AsyncGenerator<Uint8Array> {
  for (const p of pieces) yield typeof p === 'string' ? Buffer.from(p) : p
}

const delta = (content: string): string => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }] })}\n\n`

t.test('the messages are the system prompt, the history and the new message, in that order', async (t) => {
  const history = [{ role: 'user' as const, content: 'a' }, { role: 'assistant' as const, content: 'b' }]
  t.same(buildMessages('sys', { history, content: 'c' }), [
    { role: 'system', content: 'sys' }, { role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }
  ])
  t.same(buildMessages(undefined, { history: [], content: 'c' }), [{ role: 'user', content: 'c' }])
})

t.test('stream events: text, finish, [DONE], and chunks that carry nothing', async (t) => {
  t.same(interpretData('{"choices":[{"delta":{"content":"x"}}]}'), { text: 'x', finished: false, done: false })
  t.same(interpretData('{"choices":[{"delta":{"role":"assistant"}}]}'), { text: null, finished: false, done: false })
  t.same(interpretData('{"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}'), { text: null, finished: true, done: false })
  t.same(interpretData('{"choices":[{"delta":{"content":"last"},"finish_reason":"length"}]}'), { text: 'last', finished: true, done: false }, 'text and finish in one chunk')
  t.same(interpretData('{"choices":[],"usage":{"total_tokens":3}}'), { text: null, finished: false, done: false }, 'the usage chunk')
  t.same(interpretData(' [DONE] '), { text: null, finished: false, done: true })
})

t.test('a malformed stream event or an error event is an UpstreamError', async (t) => {
  t.throws(() => interpretData('{nope'), new UpstreamError('model server sent a malformed stream (an event is not JSON)'))
  t.throws(() => interpretData('42'), /not an object/)
  t.throws(() => interpretData('{"id":"x"}'), /no choices/)
  t.throws(() => interpretData('{"choices":[{"delta":{"content":5}}]}'), /delta content is not text/)
  t.throws(() => interpretData('{"error":{"message":"context length exceeded"}}'), new UpstreamError('model server error: context length exceeded'))
})

t.test('a multi-byte character split across reads is decoded whole', async (t) => {
  const event = Buffer.from(delta('ü🙂') + 'data: [DONE]\n\n')
  const cut = event.indexOf(Buffer.from('🙂')) + 2
  t.same(await collect(streamDeltas(bytes(event.subarray(0, cut), event.subarray(cut)))), ['ü🙂'])
})

t.test('the stream ends at [DONE], or at its end after a finish_reason; without either it is cut short', async (t) => {
  t.same(await collect(streamDeltas(bytes(delta('a'), 'data: [DONE]\n\n', delta('after done')))), ['a'], 'nothing after [DONE]')
  const finish = `data: ${JSON.stringify({ choices: [{ delta: {}, finish_reason: 'stop' }] })}\n\n`
  t.same(await collect(streamDeltas(bytes(delta('a'), finish))), ['a'], 'finish without [DONE] (some servers)')
  await t.rejects(collect(streamDeltas(bytes(delta('a')))), new UpstreamError('model server stream ended before [DONE]'))
})

t.test('invalid UTF-8 is a malformed stream', async (t) => {
  await t.rejects(collect(streamDeltas(bytes(new Uint8Array([0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x0a, 0x0a])))), /invalid UTF-8/)
})

interface FakeCall { url: string, init: RequestInit }

function upstreamWith (respond: (call: FakeCall) => Promise<Response>, extra: { apiKey?: string, connectTimeoutMs?: number, clock?: SimulatedClock } = {}): { calls: FakeCall[], stream: (signal?: AbortSignal) => AsyncIterable<string> } {
  const calls: FakeCall[] = []
  const upstream = createOpenAiUpstream({
    baseUrl: 'http://model.test/prefix',
    apiKey: extra.apiKey,
    model: 'm1',
    systemPrompt: undefined,
    connectTimeoutMs: extra.connectTimeoutMs ?? 1000,
    clock: extra.clock ?? new SimulatedClock(),
    fetch: async (url, init) => {
      const call = { url: String(url), init: init ?? {} }
      calls.push(call)
      return await respond(call)
    }
  })
  return { calls, stream: (signal = new AbortController().signal) => upstream.stream({ history: [], content: 'hi' }, signal) }
}

t.test('the request goes to <base>/v1/chat/completions with stream: true and the model', async (t) => {
  const u = upstreamWith(async () => new Response(delta('x') + 'data: [DONE]\n\n', { headers: { 'content-type': 'text/event-stream' } }), { apiKey: 'sk-1234' })
  t.same(await collect(u.stream()), ['x'])
  t.equal(u.calls[0]?.url, 'http://model.test/prefix/v1/chat/completions')
  t.equal(u.calls[0]?.init.method, 'POST')
  t.same(JSON.parse(String(u.calls[0]?.init.body)), { model: 'm1', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  t.equal((u.calls[0]?.init.headers as Record<string, string>).authorization, 'Bearer sk-1234')
})

t.test('a server that ignores stream: true and answers JSON is relayed as one delta', async (t) => {
  const u = upstreamWith(async () => Response.json({ choices: [{ message: { role: 'assistant', content: 'whole answer' } }] }))
  t.same(await collect(u.stream()), ['whole answer'])
})

t.test('a non-2xx answer names the status and the server\'s message, with the API key redacted', async (t) => {
  const u = upstreamWith(async () => Response.json({ error: { message: 'Incorrect API key provided: sk-abcdef.\nCheck it.' } }, { status: 401 }), { apiKey: 'sk-abcdef' })
  await t.rejects(collect(u.stream()), new UpstreamError('model server returned 401: Incorrect API key provided: [redacted]. Check it.'))
  const plain = upstreamWith(async () => new Response('Bad Gateway', { status: 502 }))
  await t.rejects(collect(plain.stream()), new UpstreamError('model server returned 502: Bad Gateway'))
  const empty = upstreamWith(async () => new Response(null, { status: 503 }))
  await t.rejects(collect(empty.stream()), new UpstreamError('model server returned 503'))
  const long = upstreamWith(async () => new Response('x'.repeat(100_000), { status: 500 }))
  const err = await collect(long.stream()).then(() => null, (e: Error) => e)
  t.ok(err !== null && err.message.length < 260, 'a long body is cut short')
})

t.test('a network failure names the system error', async (t) => {
  const u = upstreamWith(async () => { throw Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:8000'), { code: 'ECONNREFUSED' }) }) })
  await t.rejects(collect(u.stream()), new UpstreamError('model server unreachable (ECONNREFUSED)'))
})

t.test('no response headers within the connect timeout (on the injected clock) is an UpstreamError', async (t) => {
  const clock = new SimulatedClock()
  const u = upstreamWith(async ({ init }) => await new Promise<Response>((_resolve, reject) => {
    init.signal?.addEventListener('abort', () => { reject(new DOMException('aborted', 'AbortError')) })
  }), { clock, connectTimeoutMs: 250 })
  const result = collect(u.stream())
  await new Promise((resolve) => setImmediate(resolve))
  clock.increment(249)
  clock.increment(1)
  await t.rejects(result, new UpstreamError('model server did not answer within 250 ms'))
})

t.test('an abort by the caller surfaces as the abort, not as an UpstreamError', async (t) => {
  const controller = new AbortController()
  const u = upstreamWith(async ({ init }) => await new Promise<Response>((_resolve, reject) => {
    init.signal?.addEventListener('abort', () => { reject(init.signal?.reason) })
  }))
  const result = collect(u.stream(controller.signal))
  await new Promise((resolve) => setImmediate(resolve))
  controller.abort('deadline')
  const err = await result.then(() => null, (e: unknown) => e)
  t.equal(err, 'deadline')
})
