/**
 * The reference worker (src/llm-worker) against a fake OpenAI-compatible server defined here
 * and a real broker (aedes, or a private mosquitto when MQTT_TEST_URL is set). Requests are
 * published the way the gateway publishes them, and replies collected on a reply topic; one
 * test goes through the real gateway. Shared subscriptions are exercised only on mosquitto
 * (aedes accepts the SUBACK but never delivers them).
 */
import mqtt from 'mqtt'
import t, { type Test } from 'tap'
import { systemClock } from '../../src/clock.js'
import { createLogger, silentLogger } from '../../src/log.js'
import { createOpenAiUpstream } from '../../src/llm-worker/openai-stream.js'
import { createLlmWorker, type LlmWorker } from '../../src/llm-worker/worker.js'
import { createWorkerTopics } from '../../src/llm-worker/worker-topics.js'
import { createMqttLink, type MqttLink } from '../../src/mqtt/mqtt-link.js'
import { startTestBroker, type TestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { freePort } from '../fixtures/ports.js'
import { spawnTs, waitExit, waitForLine } from '../fixtures/run-ts.js'
import { holdsFor, once, waitFor } from '../fixtures/wait-for.js'
import { held, lastUser, sseDelta, sseEnd, sseHead, startFakeModel, streams, type Call, type FakeModel, type Script } from '../fixtures/fake-model.js'

interface Teardown { teardown: (fn: () => unknown) => void }

// ---------------------------------------------------------------------------------------------
// The worker under test, and a client that talks to it as the gateway does
// ---------------------------------------------------------------------------------------------

interface WorkerOptions {
  concurrency?: number
  queue?: number
  /** null: a plain subscription. Default: a shared group on mosquitto, plain on aedes. */
  group?: string | null
  systemPrompt?: string
  apiKey?: string
  connectTimeoutMs?: number
}

interface RunningWorker { worker: LlmWorker, link: MqttLink }

const testLog = process.env.TEST_LOG !== undefined ? createLogger('debug') : silentLogger()

async function startWorker (t: Teardown, broker: TestBroker, model: FakeModel, options: WorkerOptions = {}): Promise<RunningWorker> {
  const workerId = `worker-${Math.random().toString(16).slice(2, 10)}`
  const group = options.group === undefined ? (broker.kind === 'mosquitto' ? 'test-workers' : undefined) : (options.group ?? undefined)
  const topics = createWorkerTopics('llm', workerId, group)
  const link = createMqttLink({
    url: broker.url,
    clientId: workerId,
    probeTopic: topics.probe,
    keepaliveS: 10,
    staleAfterMs: 10_000,
    probeTimeoutMs: 1000,
    connectTimeoutMs: 1000,
    maxReconnectAttempts: 100,
    backoffBaseMs: 50,
    backoffCapMs: 500,
    clock: systemClock,
    log: testLog,
    inFlightSince: () => null
  })
  const upstream = createOpenAiUpstream({
    baseUrl: model.url,
    apiKey: options.apiKey,
    model: 'test-model',
    systemPrompt: options.systemPrompt,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    clock: systemClock
  })
  const worker = createLlmWorker({
    link,
    topics,
    upstream,
    concurrency: options.concurrency ?? 8,
    queue: options.queue ?? 64,
    clock: systemClock,
    log: testLog
  })
  worker.start()
  link.start()
  t.teardown(async () => {
    await worker.stop(0)
    await link.stop()
  })
  await waitFor(() => link.isUp, { what: 'worker link up' })
  return { worker, link }
}

interface Reply { v: 1, request_id: string, type: 'chunk' | 'done' | 'error', delta?: string, content?: string, error?: string, seq?: number }

interface FakeGateway {
  readonly replyTo: string
  /** Publishes a request (deadline 10 s ahead unless overridden); returns its id. */
  send: (content: string, overrides?: Record<string, unknown>) => string
  replies: (requestId: string) => Reply[]
  /** The done or error reply of a request, waited for. */
  final: (requestId: string, timeoutMs?: number) => Promise<Reply>
  /** Until a malformed probe request is answered: the worker's subscription is in place. */
  ready: (until?: () => boolean) => Promise<void>
  /** Publishes a cancel for a request on llm/chat/cancel, as a gateway does (contract v1.1). */
  cancel: (requestId: string, reason: string) => void
}

async function startFakeGateway (t: Teardown, broker: TestBroker): Promise<FakeGateway> {
  const instance = `gw-${Math.random().toString(16).slice(2, 10)}`
  const client = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0, clientId: instance })
  // A broker killed by a test must not crash the test process.
  client.on('error', () => {})
  await once(client, 'connect')
  t.teardown(() => client.endAsync(true))
  const replyTo = `llm/chat/reply/${instance}`
  await client.subscribeAsync(replyTo, { qos: 1 })
  const byId = new Map<string, Reply[]>()
  client.on('message', (_topic, payload) => {
    const reply = JSON.parse(payload.toString('utf8')) as Reply
    const list = byId.get(reply.request_id) ?? []
    list.push(reply)
    byId.set(reply.request_id, list)
  })
  let n = 0
  const replies = (id: string): Reply[] => byId.get(id) ?? []
  const gateway: FakeGateway = {
    replyTo,
    send (content, overrides = {}) {
      const id = `req-${++n}`
      const request = {
        v: 1, request_id: id, session_id: 's1', user_id: 'u1', content, history: [], reply_to: replyTo, deadline: Date.now() + 10_000, ...overrides
      }
      client.publish('llm/chat/request', JSON.stringify(request), { qos: 1 })
      return id
    },
    replies,
    cancel (requestId, reason) {
      client.publish('llm/chat/cancel', JSON.stringify({ v: 1, request_id: requestId, reason }), { qos: 1 })
    },
    final: async (id, timeoutMs = 5000) => await waitFor(() => replies(id).find((r) => r.type !== 'chunk'), { timeoutMs, what: `the final reply to ${id}` }),
    async ready (until = () => true) {
      const probes: string[] = []
      await waitFor(() => {
        if (probes.some((id) => replies(id).length > 0) && until()) return true
        // No content: the worker answers "malformed request" without calling the model.
        probes.push(gateway.send('', { content: undefined }))
        return false
      }, { intervalMs: 50, what: 'the worker to answer a probe request' })
    }
  }
  return gateway
}

async function setup (t: Test, script: Script, options: WorkerOptions = {}): Promise<{ broker: TestBroker, model: FakeModel, gateway: FakeGateway } & RunningWorker> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const model = await startFakeModel(t, script)
  const running = await startWorker(t, broker, model, options)
  const gateway = await startFakeGateway(t, broker)
  await gateway.ready()
  return { broker, model, gateway, ...running }
}

// ---------------------------------------------------------------------------------------------
// Streaming and what goes upstream
// ---------------------------------------------------------------------------------------------

t.test('deltas are relayed in order as chunks, then done carries the full text', async (t) => {
  const { gateway } = await setup(t, streams(['Hel', 'lo', ', wor', 'ld', ' — ünïcödé 🙂']))
  const id = gateway.send('hi')
  const final = await gateway.final(id)
  t.same(final, { v: 1, request_id: id, type: 'done', content: 'Hello, world — ünïcödé 🙂' })
  const replies = gateway.replies(id)
  t.same(replies.filter((r) => r.type === 'chunk').map((r) => r.delta), ['Hel', 'lo', ', wor', 'ld', ' — ünïcödé 🙂'], 'chunks in order, no empty role chunk')
  t.equal(replies[replies.length - 1]?.type, 'done', 'done comes last')
})

t.test('the model, the system prompt, the history and the new message go upstream, with the API key as a bearer token', async (t) => {
  const { gateway, model } = await setup(t, streams(['ok']), { systemPrompt: 'Be brief.', apiKey: 'sk-test-123456' })
  const history = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'Hello!' }]
  const id = gateway.send('What is MQTT?', { history })
  t.equal((await gateway.final(id)).type, 'done')
  const call = model.calls.find((c) => lastUser(c) === 'What is MQTT?')
  t.ok(call, 'the model was called')
  t.equal(call?.body.model, 'test-model')
  t.equal(call?.body.stream, true)
  t.same(call?.body.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: 'Hello!' },
    { role: 'user', content: 'What is MQTT?' }
  ])
  t.equal(call?.headers.authorization, 'Bearer sk-test-123456')
})

t.test('without an API key no Authorization header is sent', async (t) => {
  const { gateway, model } = await setup(t, streams(['ok']))
  t.equal((await gateway.final(gateway.send('hi'))).type, 'done')
  t.equal(model.calls[0]?.headers.authorization, undefined)
})

// ---------------------------------------------------------------------------------------------
// Upstream failures: one error reply each, with a clear message and no secret
// ---------------------------------------------------------------------------------------------

t.test('an upstream 500 is one error reply naming the status and the server\'s message, without the API key', async (t) => {
  const { gateway } = await setup(t, (call) => {
    call.res.writeHead(500, { 'content-type': 'application/json' })
    call.res.end(JSON.stringify({ error: { message: 'out of memory loading model (key sk-secret-999 rejected)' } }))
  }, { apiKey: 'sk-secret-999' })
  const id = gateway.send('hi')
  const final = await gateway.final(id)
  t.equal(final.type, 'error')
  t.match(final.error, /^model server returned 500: out of memory loading model/)
  t.notMatch(final.error, /sk-secret-999/, 'the key is redacted')
  t.same(gateway.replies(id).length, 1, 'exactly one reply')
})

t.test('an unreachable model server is one error reply', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const closedPort = await freePort()
  const nowhere = { url: `http://127.0.0.1:${closedPort}`, calls: [], active: 0, maxActive: 0 }
  await startWorker(t, broker, nowhere)
  const gateway = await startFakeGateway(t, broker)
  await gateway.ready()
  const final = await gateway.final(gateway.send('hi'))
  t.equal(final.type, 'error')
  t.match(final.error, /^model server unreachable \(ECONNREFUSED\)$/)
})

t.test('a malformed stream is one error reply', async (t) => {
  const { gateway } = await setup(t, (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'partial ')
    call.res.end('data: {this is not json}\n\n')
  })
  const id = gateway.send('hi')
  const final = await gateway.final(id)
  t.equal(final.type, 'error')
  t.match(final.error, /malformed stream/)
  t.equal(gateway.replies(id).filter((r) => r.type !== 'chunk').length, 1, 'one final reply')
})

t.test('a stream cut off before [DONE] is an error, not a short answer passed off as whole', async (t) => {
  const { gateway } = await setup(t, (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'half an ans')
    call.res.end()
  })
  const final = await gateway.final(gateway.send('hi'))
  t.equal(final.type, 'error')
  t.match(final.error, /ended before \[DONE\]/)
})

t.test('a model server that sends no headers within LLM_CONNECT_TIMEOUT_MS is an error reply', async (t) => {
  const { gateway, model } = await setup(t, () => { /* never answers */ }, { connectTimeoutMs: 200 })
  const id = gateway.send('hi')
  const final = await gateway.final(id)
  t.same(final, { v: 1, request_id: id, type: 'error', error: 'model server did not answer within 200 ms' })
  await waitFor(() => model.calls[0]?.aborted, { what: 'the upstream request aborted' })
})

// ---------------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------------

t.test('a request whose deadline has passed is dropped without calling the model', async (t) => {
  const { gateway, model, worker } = await setup(t, streams((call) => [`answer to ${lastUser(call)}`]))
  const late = gateway.send('too late', { deadline: Date.now() - 1 })
  // Same publisher, same topic: MQTT keeps the order, so once this is answered the late one was seen.
  const onTime = gateway.send('on time')
  t.equal((await gateway.final(onTime)).content, 'answer to on time')
  t.same(gateway.replies(late), [], 'no reply at all')
  t.same(model.calls.map(lastUser), ['on time'], 'the model never saw the late request')
  t.equal(worker.stats().expired, 1, 'counted')
})

t.test('a deadline passing mid-stream aborts the upstream call and nothing more is sent', async (t) => {
  const { gateway, model, worker } = await setup(t, async (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'first ')
    await call.released // never, unless the test ends
  })
  const id = gateway.send('slow', { deadline: Date.now() + 500 })
  await waitFor(() => model.calls[0]?.aborted, { what: 'the upstream request aborted at the deadline' })
  await holdsFor(() => gateway.replies(id).every((r) => r.type === 'chunk'), { forMs: 300, what: 'no final reply after the deadline' })
  t.same(gateway.replies(id).map((r) => r.delta), ['first '])
  t.equal(worker.stats().timedOut, 1)
})

t.test('a cancel from the gateway aborts the upstream call (the model server sees its connection close) and nothing more is sent', async (t) => {
  const { gateway, model, worker } = await setup(t, async (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'first ')
    await call.released // never, unless the test ends
  })
  const id = gateway.send('long answer')
  await waitFor(() => gateway.replies(id).length === 1, { what: 'the first chunk' })
  t.equal(gateway.replies(id)[0]?.seq, 1, 'chunks carry seq')
  gateway.cancel(id, 'client_cancelled')
  await waitFor(() => model.calls[0]?.aborted, { what: 'the model server to see its request closed' })
  await holdsFor(() => gateway.replies(id).length === 1, { forMs: 300, what: 'nothing after the cancel, not even an error' })
  t.equal(worker.stats().cancelled, 1)
})

// ---------------------------------------------------------------------------------------------
// Concurrency and the queue
// ---------------------------------------------------------------------------------------------

t.test('no more than WORKER_CONCURRENCY upstream calls run at once; the rest wait their turn', async (t) => {
  const { gateway, model, worker } = await setup(t, held, { concurrency: 2, queue: 10 })
  const ids = ['a', 'b', 'c', 'd', 'e'].map((c) => gateway.send(c))
  await waitFor(() => model.active === 2 && worker.stats().waiting === 3, { what: 'two calls running, three waiting' })
  await holdsFor(() => model.calls.length === 2, { forMs: 200, what: 'only two calls started' })
  // Let them go one at a time; each release starts exactly one waiting request.
  for (let i = 0; i < ids.length; i++) {
    await waitFor(() => model.calls[i], { what: `call ${i} started` })
    model.calls[i]?.release()
  }
  for (const id of ids) t.equal((await gateway.final(id)).type, 'done', `${id} done`)
  t.equal(model.maxActive, 2, 'never more than two at once')
  t.same(model.calls.map(lastUser), ['a', 'b', 'c', 'd', 'e'], 'waiting requests start oldest first')
})

t.test('a request beyond the queue gets "worker overloaded" at once', async (t) => {
  const { gateway, model } = await setup(t, held, { concurrency: 1, queue: 1 })
  const running = gateway.send('running')
  await waitFor(() => model.calls.length === 1, { what: 'the first call started' })
  const waiting = gateway.send('waiting')
  const refused = gateway.send('refused')
  const final = await gateway.final(refused, 2000)
  t.same(final, { v: 1, request_id: refused, type: 'error', error: 'worker overloaded' })
  t.same(gateway.replies(running), [], 'the running one is still going')
  t.same(gateway.replies(waiting), [], 'the waiting one is still waiting')
  model.calls[0]?.release()
  await waitFor(() => model.calls[1], { what: 'the waiting call started' })
  model.calls[1]?.release()
  t.equal((await gateway.final(running)).type, 'done')
  t.equal((await gateway.final(waiting)).type, 'done')
  t.equal(model.calls.length, 2, 'the refused request never reached the model')
})

// ---------------------------------------------------------------------------------------------
// Link loss, shutdown, subscriptions
// ---------------------------------------------------------------------------------------------

t.test('when the link goes down mid-stream the upstream call is aborted', async (t) => {
  const { gateway, model, worker, broker } = await setup(t, async (call) => {
    sseHead(call.res)
    sseDelta(call.res, 'first ')
    await call.released
  })
  gateway.send('hi')
  await waitFor(() => model.calls.length === 1, { what: 'the call started' })
  await broker.kill()
  await waitFor(() => model.calls[0]?.aborted, { what: 'the upstream call aborted' })
  t.equal(worker.stats().linkLost, 1)
  t.equal(worker.stats().active, 0)
})

t.test('stop lets in-flight requests finish within the grace period and takes no new ones', async (t) => {
  const { gateway, model, worker } = await setup(t, held)
  const id = gateway.send('in flight')
  await waitFor(() => model.calls.length === 1, { what: 'the call started' })
  const stopped = worker.stop(10_000)
  model.calls[0]?.release()
  t.equal((await gateway.final(id)).type, 'done', 'finished normally')
  await stopped
  gateway.send('after stop')
  await holdsFor(() => model.calls.length === 1, { forMs: 200, what: 'no new upstream call after stop' })
})

t.test('after the grace period in-flight requests are aborted and answered "worker shutting down"', async (t) => {
  const { gateway, model, worker } = await setup(t, held, { concurrency: 1 })
  const running = gateway.send('running')
  await waitFor(() => model.calls.length === 1, { what: 'the call started' })
  const waiting = gateway.send('waiting')
  await waitFor(() => worker.stats().waiting === 1, { what: 'the second request waiting' })
  await worker.stop(100)
  t.same(await gateway.final(running), { v: 1, request_id: running, type: 'error', error: 'worker shutting down' })
  t.same(await gateway.final(waiting), { v: 1, request_id: waiting, type: 'error', error: 'worker shutting down' })
  await waitFor(() => model.calls[0]?.aborted, { what: 'the upstream call aborted' })
  t.equal(model.calls.length, 1, 'the waiting request never started')
})

t.test('with WORKER_SHARED_GROUP empty (plain subscription) every worker answers every request', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const model = await startFakeModel(t, streams(['ok']))
  const a = await startWorker(t, broker, model, { group: null })
  const b = await startWorker(t, broker, model, { group: null })
  const gateway = await startFakeGateway(t, broker)
  await gateway.ready(() => a.worker.stats().malformed > 0 && b.worker.stats().malformed > 0)
  const id = gateway.send('hi')
  await waitFor(() => gateway.replies(id).filter((r) => r.type === 'done').length === 2, { what: 'both workers answered' })
  t.equal(model.calls.length, 2, 'the model was asked twice (the gateway keeps the first answer)')
})

t.test('workers in one shared group split the requests: each is answered once (mosquitto only)', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  if (broker.kind !== 'mosquitto') {
    t.pass('skipped: aedes accepts $share subscriptions but never delivers them (run with MQTT_TEST_URL for mosquitto)')
    return
  }
  const model = await startFakeModel(t, streams((call) => [`answer to ${lastUser(call)}`]))
  const a = await startWorker(t, broker, model, { group: 'split' })
  const b = await startWorker(t, broker, model, { group: 'split' })
  const gateway = await startFakeGateway(t, broker)
  await gateway.ready(() => a.worker.stats().malformed > 0 && b.worker.stats().malformed > 0)
  const ids = Array.from({ length: 10 }, (_, i) => gateway.send(`q${i}`))
  for (const [i, id] of ids.entries()) t.equal((await gateway.final(id)).content, `answer to q${i}`)
  await holdsFor(() => ids.every((id) => gateway.replies(id).filter((r) => r.type !== 'chunk').length === 1), { forMs: 200, what: 'one final reply per request' })
  t.equal(model.calls.length, 10, 'each request reached the model once')
  t.ok(a.worker.stats().completed > 0 && b.worker.stats().completed > 0, `both workers took some (${a.worker.stats().completed} + ${b.worker.stats().completed})`)
})

// ---------------------------------------------------------------------------------------------
// End to end through the real gateway
// ---------------------------------------------------------------------------------------------

t.test('through the gateway: a chat is answered by the model, and the session\'s history reaches it', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const model = await startFakeModel(t, streams((call) => ['You said: ', lastUser(call)]))
  const { worker } = await startWorker(t, broker, model, { systemPrompt: 'Be brief.' })
  // Only once the worker answers is its subscription known to be in place.
  await (await startFakeGateway(t, broker)).ready()
  // A generous task deadline: password hashing on a loaded CI machine is not what is under test.
  const gw = await startGateway(t, { MQTT_URL: broker.url, CHAT_TIMEOUT_MS: '10000', THREAD_TASK_TIMEOUT_MS: '60000' })
  await waitFor(() => gw.tether.link.isUp, { what: 'gateway link up' })
  const first = await gw.chat('e2e', 'hello')
  t.equal(first.status, 200, first.text)
  t.same(first.json.reply, { role: 'assistant', content: 'You said: hello' })
  const second = await gw.chat('e2e', 'and again')
  t.equal(second.status, 200)
  t.equal(second.json.reply.content, 'You said: and again')
  const last = model.calls[model.calls.length - 1]
  t.same(last?.body.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'hello' },
    { role: 'assistant', content: 'You said: hello' },
    { role: 'user', content: 'and again' }
  ], 'history from the gateway\'s database, oldest first')
  t.ok(worker.stats().completed >= 2)
})

// ---------------------------------------------------------------------------------------------
// The process: npm run worker
// ---------------------------------------------------------------------------------------------

t.test('a bad configuration is one line on stderr and exit 78', async (t) => {
  // In parallel: most of each run is the TypeScript loader starting.
  const envs: Array<Record<string, string>> = [
    { LLM_BASE_URL: 'http://127.0.0.1:1', LLM_MODEL: 'm' },
    { MQTT_URL: 'mqtt://127.0.0.1:1', LLM_BASE_URL: 'ftp://models.example', LLM_MODEL: 'm' },
    { MQTT_URL: 'mqtt://127.0.0.1:1', LLM_BASE_URL: 'http://x', LLM_MODEL: 'm', WORKER_CONCURRENCY: '0' }
  ]
  const [missing, badUrl, badNumber] = await Promise.all(envs.map(async (env) => await waitExit(spawnTs('src/llm-worker/main.ts', env), 60_000)))
  t.equal(missing?.code, 78)
  t.match(missing?.stderr, /^config: MQTT_URL is required \(example: MQTT_URL=mqtt:\/\/127\.0\.0\.1:1883\)\n$/)
  t.equal(missing?.stdout, '')
  t.equal(badUrl?.code, 78)
  t.match(badUrl?.stderr, /^config: LLM_BASE_URL must use http:\/\/ or https:\/\/ \(got ftp:\/\/\) \(example: [^\n]*\)\n$/)
  t.equal(badNumber?.code, 78)
  t.match(badNumber?.stderr, /^config: WORKER_CONCURRENCY must be between 1 and \d+, got 0 \(example: WORKER_CONCURRENCY=8\)\n$/)
})

t.test('the process answers requests, and on SIGTERM answers "worker shutting down" after the grace period, then exits 0', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const model = await startFakeModel(t, async (call) => {
    if (lastUser(call) === 'hold') { await held(call); return }
    await streams(['hi ', 'there'])(call)
  })
  const child = spawnTs('src/llm-worker/main.ts', {
    MQTT_URL: broker.url,
    LLM_BASE_URL: `${model.url}/v1`,
    LLM_MODEL: 'test-model',
    WORKER_SHARED_GROUP: broker.kind === 'mosquitto' ? 'tether-workers' : '',
    WORKER_ID: 'worker-process',
    WORKER_SHUTDOWN_GRACE_MS: '200',
    LOG_LEVEL: 'info'
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const exited = waitExit(child, 60_000)
  await waitForLine(child, /worker ready/, 30_000)
  const gateway = await startFakeGateway(t, broker)
  await gateway.ready()
  const hello = gateway.send('hello')
  // An announcing worker (the default) stamps its id on every reply, even on the shared topic.
  t.same(await gateway.final(hello), { v: 1, request_id: hello, type: 'done', content: 'hi there', worker_id: 'worker-process' }, 'answered through the process')
  const holding = gateway.send('hold')
  await waitFor(() => model.calls.some((c) => lastUser(c) === 'hold'), { what: 'the held call started' })
  child.kill('SIGTERM')
  t.same(await gateway.final(holding), { v: 1, request_id: holding, type: 'error', error: 'worker shutting down', worker_id: 'worker-process' })
  const exit = await exited
  t.equal(exit.code, 0, exit.stderr)
  t.match(exit.stdout, /worker stopped/)
})
