/**
 * MQTT 5 where the broker has it (contract v1.1, MQTT_PROTOCOL): a private Mosquitto speaks 5,
 * aedes (the embedded broker) only 3.1.1. With 5 a chat nobody subscribes to is answered
 * 503 no_workers from the PUBACK's reason code at once; requests carry the deadline as Message
 * Expiry Interval, and the reply topic and request id as Response Topic and Correlation Data;
 * `auto` falls back to 3.1.1 on a broker that does not answer a version 5 CONNECT.
 */
import mqtt from 'mqtt'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

t.test('MQTT 5 broker and no subscriber at all: 503 no_workers from the PUBACK, no presence needed', async (t) => {
  const broker = await startTestBroker({ kind: 'mosquitto' })
  t.teardown(() => broker.close())
  // A deadline and an accept timeout far away: the answer can only come from the PUBACK.
  const gw = await startGateway(t, { MQTT_URL: broker.url, MQTT_PROTOCOL: 'auto', CHAT_TIMEOUT_MS: '60000' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  t.equal(gw.tether.link.protocolVersion, 5, 'auto chose MQTT 5 on Mosquitto')
  const a = await gw.chat('nobody', 'is anyone subscribed?')
  t.equal(a.status, 503, a.text)
  t.equal(a.json.error, 'no_workers')
  t.equal(a.headers['retry-after'], '1')
  t.ok(a.ms < 10_000, `answered in ${Math.round(a.ms)} ms, not at the 60 s deadline`)
  t.equal(await gw.metric('tether_chat_requests_total', { outcome: 'no_workers' }), 1)
  t.equal(gw.tether.pending.size, 0)

  // A v1 worker (3.1.1, no presence) subscribes: the same gateway's chats flow.
  const w = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => w.stop())
  const ok = await gw.chat('nobody', 'and now?')
  t.equal(ok.status, 200, ok.text)
})

t.test('MQTT 5 requests carry the deadline as Message Expiry Interval, and Response Topic and Correlation Data', async (t) => {
  const broker = await startTestBroker({ kind: 'mosquitto' })
  t.teardown(() => broker.close())
  const worker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 })
  t.teardown(() => worker.endAsync(true))
  let seen: mqtt.IPublishPacket | null = null
  worker.on('message', (_topic, payload, packet) => {
    seen = packet
    const request = JSON.parse(payload.toString('utf8'))
    const replyTo = packet.properties?.responseTopic as string
    void worker.publishAsync(replyTo, JSON.stringify({ v: 1, request_id: request.request_id, type: 'done', content: 'from v5' }), { qos: 1 })
  })
  await worker.subscribeAsync('llm/chat/request', { qos: 1 })
  const gw = await startGateway(t, { MQTT_URL: broker.url, MQTT_PROTOCOL: '5', CHAT_TIMEOUT_MS: '30000' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  const a = await gw.chat('v5', 'hello')
  t.equal(a.status, 200, a.text)
  const packet = seen as unknown as mqtt.IPublishPacket
  const request = JSON.parse(packet.payload.toString())
  t.equal(packet.properties?.responseTopic, request.reply_to)
  t.equal(packet.properties?.correlationData?.toString(), request.request_id)
  const expiry = packet.properties?.messageExpiryInterval as number
  t.ok(expiry > 0 && expiry <= 30, `expiry ${expiry} s within the 30 s deadline`)
})

t.test('auto falls back to 3.1.1 on a broker that does not answer MQTT 5 (aedes), and chats flow', async (t) => {
  const broker = await startTestBroker({ kind: 'aedes' })
  t.teardown(() => broker.close())
  const w = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => w.stop())
  const gw = await startGateway(t, {
    MQTT_URL: broker.url,
    MQTT_PROTOCOL: 'auto',
    MQTT_CONNECT_TIMEOUT_MS: '500',
    MQTT_BACKOFF_BASE_MS: '50',
    MQTT_BACKOFF_CAP_MS: '200'
  })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'link up on 3.1.1' })
  t.equal(gw.tether.link.protocolVersion, 4)
  t.equal((await gw.chat('fallback', 'hi')).status, 200)
})
