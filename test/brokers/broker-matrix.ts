/**
 * The broker matrix (`npm run test:brokers`, run by .ci/run after `npm test`): the same
 * scenarios against every MQTT broker this machine kind has, each a private instance on its
 * own ports: the embedded aedes, Mosquitto over 3.1.1 and over 5, NATS's MQTT server (with
 * JetStream) and RabbitMQ's MQTT plugin. docs/brokers.md says what each one does and lacks.
 *
 * Scenarios: a chat through a v1 worker on a plain subscription; a chat through an announced
 * worker on its own topic, that worker frozen (worker_lost, then no_workers) and back; a hint
 * from MQTT to a WebSocket; a streamed chat closed mid-way and resumed; the broker killed
 * (503 at once) and restarted (chats again). MATRIX_BROKERS=aedes,nats picks some.
 */
import t, { type Test } from 'tap'
import type { TestBroker } from '../fixtures/broker.js'
import { findExecutable } from '../fixtures/broker.js'
import { startAedesBroker } from '../fixtures/aedes-broker.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { startMosquittoBroker } from '../fixtures/mosquitto-broker.js'
import { startNatsBroker, startRabbitBroker } from '../fixtures/process-brokers.js'
import { chunk, done, echo, pause, startScriptedWorker, type Behaviour } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, mqttPeer, untilHintsFlow, wsUrl } from '../fixtures/ws-client.js'

interface Flavour {
  name: string
  start: () => Promise<TestBroker>
  /** MQTT_PROTOCOL for the gateway. */
  protocol: 'auto' | '5' | '3.1.1'
  /** The protocol the link settles on. */
  expectVersion: 4 | 5
}

function need (bin: string): string {
  const path = findExecutable(bin)
  if (path === undefined) throw new Error(`${bin} is not installed: .ci/run installs it (apt-get install ${bin === 'nats-server' ? 'nats-server' : bin === 'rabbitmq-server' ? 'rabbitmq-server' : 'mosquitto'})`)
  return path
}

const FLAVOURS: Flavour[] = [
  { name: 'aedes', start: startAedesBroker, protocol: 'auto', expectVersion: 4 },
  { name: 'mosquitto-3.1.1', start: async () => await startMosquittoBroker({ bin: need('mosquitto'), setpriv: findExecutable('setpriv') }), protocol: '3.1.1', expectVersion: 4 },
  { name: 'mosquitto-5', start: async () => await startMosquittoBroker({ bin: need('mosquitto'), setpriv: findExecutable('setpriv') }), protocol: 'auto', expectVersion: 5 },
  { name: 'nats', start: async () => await startNatsBroker(need('nats-server')), protocol: 'auto', expectVersion: 4 },
  { name: 'rabbitmq', start: async () => await startRabbitBroker(need('rabbitmq-server')), protocol: 'auto', expectVersion: 4 }
]

const wanted = process.env.MATRIX_BROKERS?.split(',').map((s) => s.trim()).filter(Boolean)
const flavours = wanted === undefined ? FLAVOURS : FLAVOURS.filter((f) => wanted.includes(f.name))

/** 20 numbered chunks paced like a model, for the resume scenario; an echo otherwise. */
const behaviour: Behaviour = (request) => {
  if (request.content.startsWith('slow')) {
    const deltas = Array.from({ length: 20 }, (_, i) => `c${i + 1} `)
    return [...deltas.flatMap((d, i) => [chunk(request, d, i + 1), pause(20)]), done(request, deltas.join(''))]
  }
  return echo(request)
}

async function gatewayOn (t: Test, broker: TestBroker, flavour: Flavour): Promise<Gateway> {
  const gw = await startGateway(t, {
    MQTT_URL: broker.url,
    MQTT_PROTOCOL: flavour.protocol,
    CHAT_TIMEOUT_MS: '8000',
    MQTT_CONNECT_TIMEOUT_MS: '1500',
    MQTT_BACKOFF_BASE_MS: '50',
    MQTT_BACKOFF_CAP_MS: '500',
    MQTT_MAX_RECONNECT_ATTEMPTS: '1000',
    MAX_PENDING_PER_SESSION: '100'
  })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 20_000, what: `the link up on ${flavour.name}` })
  return gw
}

for (const flavour of flavours) {
  t.test(flavour.name, async (t) => {
    const broker = await flavour.start()
    t.teardown(() => broker.close())

    await t.test('a v1 worker on a plain subscription answers; the link speaks the expected MQTT version', async (t) => {
      const w = await startScriptedWorker({ url: broker.url, behaviour })
      t.teardown(() => w.stop())
      const gw = await gatewayOn(t, broker, flavour)
      t.equal(gw.tether.link.protocolVersion, flavour.expectVersion)
      const a = await gw.chat('v1', 'hello matrix')
      t.equal(a.status, 200, a.text)
      t.equal(a.json.reply.content, 'echo: hello matrix')
    })

    await t.test('an announced worker takes chats on its own topic; frozen, its chat ends worker_lost and new ones no_workers; back, chats flow', async (t) => {
      const w = await startScriptedWorker({
        url: broker.url,
        behaviour: (r) => r.content === 'hold' ? [chunk(r, 'x ', 1), pause(30_000)] : echo(r),
        announce: { capacity: 4, heartbeatMs: 200 },
        clientId: `matrix-worker-${flavour.name.replace(/\./g, '')}`
      })
      t.teardown(() => w.stop())
      const gw = await gatewayOn(t, broker, flavour)
      await waitFor(async () => (await gw.request('GET', '/api/health/workers')).json.online === 1, { what: 'the worker online' })
      t.equal((await gw.chat('announced', 'direct')).status, 200)
      t.equal(w.received.length, 1, 'received once: on its own topic, not also on the shared one')
      const held = gw.chat('announced', 'hold')
      await waitFor(() => w.holding === 1, { what: 'the chat taken' })
      w.freeze()
      const lost = await held
      t.equal(lost.json.error, 'worker_lost', lost.text)
      t.equal((await gw.chat('announced', 'anyone?')).json.error, 'no_workers')
      w.thaw()
      await waitFor(async () => (await gw.request('GET', '/api/health/workers')).json.online === 1, { what: 'the worker back' })
      t.equal((await gw.chat('announced', 'back')).status, 200)
    })

    await t.test('a hint published on MQTT reaches the session\'s WebSocket', async (t) => {
      const gw = await gatewayOn(t, broker, flavour)
      const sessionId = await gw.sessionId('hints')
      const socket = await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
      const peer = await mqttPeer(t, broker.url)
      await untilHintsFlow(peer, sessionId, [socket])
      await peer.publish(`llm/hints/${sessionId}`, JSON.stringify({ text: 'try the left door' }))
      const hint = await socket.next('the hint', (f) => f?.type === 'hint' && f.data?.text === 'try the left door')
      t.equal(hint.data.text, 'try the left door')
    })

    await t.test('a stream closed after 3 chunks and resumed gets the rest, no gap, no repeat', async (t) => {
      const w = await startScriptedWorker({ url: broker.url, behaviour })
      t.teardown(() => w.stop())
      const gw = await gatewayOn(t, broker, flavour)
      const sessionId = await gw.sessionId('resume')
      const first = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
      first.send({ type: 'chat', id: 'r1', session_id: sessionId, content: 'slow please' })
      const third = await first.next('chunk 3', (f) => f.type === 'chunk' && f.id === 'r1' && f.seq === 3)
      await first.close()
      const second = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
      second.send({ type: 'resume', id: 'again', request_id: third.request_id, after_seq: 3 })
      const end = await second.next('the end', (f) => f.id === 'again' && (f.type === 'done' || f.type === 'error'), 10_000)
      t.equal(end.type, 'done')
      t.same(second.frames.filter((f) => f.type === 'chunk' && f.id === 'again').map((f) => f.seq), Array.from({ length: 17 }, (_, i) => i + 4))
    })

    await t.test('the broker killed: chats get 503 at once; restarted: chats flow again', async (t) => {
      const w = await startScriptedWorker({ url: broker.url, behaviour })
      t.teardown(() => w.stop())
      const gw = await gatewayOn(t, broker, flavour)
      t.equal((await gw.chat('kill', 'before')).status, 200)
      await broker.kill()
      await waitFor(() => !gw.tether.link.isUp, { what: 'the link down' })
      const during = await gw.chat('kill', 'during')
      t.equal(during.status, 503)
      t.equal(during.json.error, 'llm_unavailable')
      await broker.restart()
      // The scripted worker does not reconnect: a fresh one stands in for a worker that does.
      const w2 = await startScriptedWorker({ url: broker.url, behaviour })
      t.teardown(() => w2.stop())
      await waitFor(() => gw.tether.link.isUp, { timeoutMs: 20_000, what: 'the link back' })
      await waitFor(async () => (await gw.chat('kill', 'after')).status === 200, { timeoutMs: 20_000, what: 'a chat answered after the restart' })
      t.pass('chats flow again')
    })
  })
}
