import mqtt, { type MqttClient } from 'mqtt'
import t from 'tap'
import { findExecutable, startTestBroker, type TestBroker } from '../../fixtures/broker.js'
import {
  echo,
  fail,
  raw,
  silent,
  startScriptedWorker,
  type Behaviour,
  type ChatRequest,
  type ScriptedWorker
} from '../../fixtures/scripted-worker.js'
import { holdsFor, once, waitFor } from '../../fixtures/wait-for.js'

interface Scope {
  teardown (fn: () => unknown): void
}

/** The gateway's side: publishes requests and collects what comes back on its reply topic. */
interface Gateway {
  replies: string[]
  ask(request: Partial<ChatRequest>): Promise<ChatRequest>
}

let sequence = 0

async function setup (t: Scope, behaviour: Behaviour, options: { kind?: 'aedes' | 'mosquitto', prefix?: string, group?: string } = {}):
Promise<{ broker: TestBroker, worker: ScriptedWorker, gateway: Gateway }> {
  const broker = await startTestBroker(options.kind ? { kind: options.kind } : {})
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour, prefix: options.prefix, group: options.group })
  t.teardown(() => worker.stop())

  const client: MqttClient = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0 })
  client.on('error', () => {})
  t.teardown(() => client.endAsync(true))
  await once(client, 'connect')
  const replyTo = `${options.prefix ?? 'llm'}/chat/reply/test-gateway`
  await client.subscribeAsync(replyTo, { qos: 1 })
  const replies: string[] = []
  client.on('message', (_topic, payload) => replies.push(payload.toString('utf8')))

  const gateway: Gateway = {
    replies,
    async ask (fields) {
      sequence += 1
      const request: ChatRequest = {
        v: 1,
        request_id: `req-${sequence}`,
        session_id: 'session-1',
        user_id: 'user-1',
        content: 'hello there world',
        history: [],
        reply_to: replyTo,
        deadline: Date.now() + 60_000,
        ...fields
      }
      await client.publishAsync(`${options.prefix ?? 'llm'}/chat/request`, JSON.stringify(request), { qos: 1 })
      return request
    }
  }
  return { broker, worker, gateway }
}

const parsed = (replies: string[]): unknown[] => replies.map((reply) => JSON.parse(reply))

t.test('echo streams the content word by word, then done with the whole text', async (t) => {
  const { worker, gateway } = await setup(t, echo)
  const request = await gateway.ask({ content: 'hello there world' })
  await waitFor(() => gateway.replies.length === 5, { what: 'four chunks and a done' })
  const id = request.request_id
  t.same(parsed(gateway.replies), [
    { v: 1, request_id: id, type: 'chunk', delta: 'echo: ' },
    { v: 1, request_id: id, type: 'chunk', delta: 'hello ' },
    { v: 1, request_id: id, type: 'chunk', delta: 'there ' },
    { v: 1, request_id: id, type: 'chunk', delta: 'world' },
    { v: 1, request_id: id, type: 'done', content: 'echo: hello there world' }
  ])
  t.same(worker.received, [request], 'the worker recorded the parsed request')
  t.same(worker.errors, [])
})

t.test('fail(message) answers with one error reply', async (t) => {
  const { gateway } = await setup(t, fail('model exploded'))
  const request = await gateway.ask({})
  await waitFor(() => gateway.replies.length === 1, { what: 'the error reply' })
  t.same(parsed(gateway.replies), [{ v: 1, request_id: request.request_id, type: 'error', error: 'model exploded' }])
})

t.test('silent receives the request and publishes nothing', async (t) => {
  const { worker, gateway } = await setup(t, silent)
  await gateway.ask({})
  await waitFor(() => worker.received.length === 1, { what: 'the request to arrive' })
  await holdsFor(() => gateway.replies.length === 0, { forMs: 200, what: 'no reply from a silent worker' })
})

t.test('raw publishes its payloads byte for byte and in order', async (t) => {
  const { gateway } = await setup(t, raw((request) => [
    '{not json',
    Buffer.from([0xff, 0xfe]),
    JSON.stringify({ v: 1, request_id: request.request_id, type: 'done', content: 'a' }),
    JSON.stringify({ v: 1, request_id: request.request_id, type: 'done', content: 'b' })
  ]))
  const request = await gateway.ask({})
  await waitFor(() => gateway.replies.length === 4, { what: 'four raw replies' })
  t.equal(gateway.replies[0], '{not json')
  t.equal(gateway.replies[1], Buffer.from([0xff, 0xfe]).toString('utf8'))
  t.match(gateway.replies[3], `"request_id":"${request.request_id}"`)
  t.match(gateway.replies[3], '"content":"b"')
})

t.test('an async behaviour may hold its answer until the test releases it', async (t) => {
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  const { worker, gateway } = await setup(t, async (request) => {
    await gate
    return echo(request)
  })
  await gateway.ask({ content: 'later' })
  await waitFor(() => worker.received.length === 1, { what: 'the request to arrive' })
  t.equal(gateway.replies.length, 0, 'nothing before release')
  release()
  await waitFor(() => gateway.replies.length === 3, { what: 'the released answer' })
})

t.test('a custom prefix moves the request topic', async (t) => {
  const { worker, gateway } = await setup(t, echo, { prefix: 'tenant-a' })
  await gateway.ask({})
  await waitFor(() => worker.received.length === 1, { what: 'a request on tenant-a/chat/request' })
})

t.test('an unparseable request is recorded as an error and not answered', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 0 })
  t.teardown(() => client.endAsync(true))
  await client.publishAsync('llm/chat/request', '{oops', { qos: 1 })
  await waitFor(() => worker.errors.length === 1, { what: 'the parse error to be recorded' })
  t.match(worker.errors[0]!.message, /unparseable request/)
  t.same(worker.received, [])
})

t.test('stop() disconnects and is idempotent', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  await Promise.all([worker.stop(), worker.stop()])
  await worker.stop()
  t.notOk(worker.client.connected)
})

t.test('startScriptedWorker rejects with a clear error when no broker listens', async (t) => {
  const broker = await startTestBroker()
  const url = broker.url
  await broker.close()
  await t.rejects(startScriptedWorker({ url, behaviour: echo }), { code: 'ECONNREFUSED' })
})

t.test('a worker in a shared-subscription group gets requests from mosquitto',
  async (t) => {
    if (findExecutable('mosquitto') === undefined) {
      t.fail('no mosquitto binary: apt-get install mosquitto (bash .ci/run does it)')
      return
    }
    const { worker, gateway } = await setup(t, echo, { kind: 'mosquitto', group: 'workers' })
    await gateway.ask({})
    await waitFor(() => gateway.replies.length > 0 && worker.received.length === 1, { what: 'a reply via $share' })
  })
