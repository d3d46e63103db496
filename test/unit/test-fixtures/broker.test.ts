import mqtt, { type MqttClient } from 'mqtt'
import t from 'tap'
import { findExecutable, startTestBroker, type BrokerKind, type TestBroker } from '../../fixtures/broker.js'
import { canConnect } from '../../fixtures/ports.js'
import { holdsFor, once, waitFor } from '../../fixtures/wait-for.js'

interface Scope {
  teardown (fn: () => unknown): void
}

async function broker (t: Scope, kind: BrokerKind): Promise<TestBroker> {
  const started = await startTestBroker({ kind })
  t.teardown(() => started.close())
  return started
}

async function client (t: Scope, url: string): Promise<MqttClient> {
  const connected = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 })
  connected.on('error', () => {})
  t.teardown(() => connected.endAsync(true))
  await once(connected, 'connect')
  return connected
}

const hasMosquitto = findExecutable('mosquitto') !== undefined
const kinds: BrokerKind[] = ['aedes', 'mosquitto']

for (const kind of kinds) {
  t.test(`${kind}`, async (t) => {
    if (kind === 'mosquitto' && !hasMosquitto) {
      t.fail('no mosquitto binary: apt-get install mosquitto (bash .ci/run does it)')
      return
    }
    t.test('a message published at QoS 1 reaches a subscriber', async (t) => {
      const b = await broker(t, kind)
      t.equal(b.kind, kind)
      t.equal(b.url, `mqtt://127.0.0.1:${b.port}`)
      const sub = await client(t, b.url)
      const pub = await client(t, b.url)
      await sub.subscribeAsync('fixture/hello', { qos: 1 })
      const message = once(sub, 'message')
      await pub.publishAsync('fixture/hello', 'hi', { qos: 1 })
      const [topic, payload] = await message
      t.equal(topic, 'fixture/hello')
      t.equal(String(payload), 'hi')
    })

    t.test('kill() drops clients and frees the port; restart() listens on the same port again', async (t) => {
      const b = await broker(t, kind)
      const port = b.port
      const before = await client(t, b.url)
      const closed = once(before, 'close')

      await b.kill()
      await closed
      t.notOk(await canConnect(port), 'nothing listens after kill()')
      await b.kill()

      await b.restart()
      t.equal(b.port, port, 'same port')
      const after = await client(t, b.url)
      t.ok(after.connected, 'a new client connects after restart()')
    })

    t.test('restart() on a running broker replaces it', async (t) => {
      const b = await broker(t, kind)
      const before = await client(t, b.url)
      const closed = once(before, 'close')
      await b.restart()
      await closed
      t.ok((await client(t, b.url)).connected)
    })

    t.test('freeze() keeps connections open but unanswered until thaw()', async (t) => {
      const b = await broker(t, kind)
      const c = await client(t, b.url)
      await c.subscribeAsync('fixture/frozen', { qos: 1 })
      let delivered = false
      c.on('message', () => { delivered = true })
      let closed = false
      c.on('close', () => { closed = true })

      await b.freeze()
      let acked = false
      const published = c.publishAsync('fixture/frozen', 'x', { qos: 1 }).then(() => { acked = true })
      await holdsFor(() => !acked && !delivered && !closed, { forMs: 300, what: 'silence from a frozen broker' })
      t.ok(await canConnect(b.port), 'a frozen broker still accepts TCP connections')

      await b.thaw()
      await published
      await waitFor(() => delivered, { what: 'the held message after thaw()' })
      t.notOk(closed, 'the client stayed connected throughout')
    })

    t.test('a frozen broker can be killed and restarts unfrozen', async (t) => {
      const b = await broker(t, kind)
      const old = await client(t, b.url)
      const closed = once(old, 'close')
      await b.freeze()
      await b.kill()
      await closed
      await b.restart()
      const fresh = await client(t, b.url)
      await fresh.publishAsync('fixture/after', 'y', { qos: 1 })
      t.pass('the restarted broker acknowledges a QoS 1 publish')
    })

    t.test('close() is idempotent and frees the port', async (t) => {
      const b = await startTestBroker({ kind })
      await Promise.all([b.close(), b.close()])
      await b.close()
      t.notOk(await canConnect(b.port))
      await t.rejects(b.restart(), /after close/)
    })
  })
}

t.test('the broker kind follows MQTT_TEST_URL', async (t) => {
  const saved = process.env.MQTT_TEST_URL
  t.teardown(() => {
    if (saved === undefined) delete process.env.MQTT_TEST_URL
    else process.env.MQTT_TEST_URL = saved
  })

  delete process.env.MQTT_TEST_URL
  const embedded = await startTestBroker()
  t.teardown(() => embedded.close())
  t.equal(embedded.kind, 'aedes', 'unset: embedded aedes')

  process.env.MQTT_TEST_URL = 'mqtt://127.0.0.1:1883'
  const chosen = await startTestBroker()
  t.teardown(() => chosen.close())
  t.equal(chosen.kind, hasMosquitto ? 'mosquitto' : 'aedes', 'set: a private mosquitto when the binary exists')
  t.not(chosen.port, 1883, 'never the shared broker')
})
