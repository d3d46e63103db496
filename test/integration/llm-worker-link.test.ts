/**
 * The `deliverAs` option of createMqttLink's subscribe, added for the worker's shared
 * subscription: the subscribed filter and the topic messages arrive with may differ. Shown
 * here with a wildcard filter, which both aedes and mosquitto deliver (a `$share/` filter is
 * exercised in llm-worker.test.ts on mosquitto).
 */
import mqtt from 'mqtt'
import t, { type Test } from 'tap'
import { createMqttLink, type MqttLink } from '../../src/mqtt/mqtt-link.js'
import { startTestBroker } from '../fixtures/broker.js'
import { testLinkOptions } from '../fixtures/test-link.js'
import { holdsFor, once, waitFor } from '../fixtures/wait-for.js'

async function setup (t: Test): Promise<{ link: MqttLink, publish: (topic: string, text: string) => Promise<void>, restartBroker: () => Promise<void> }> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const link = createMqttLink(testLinkOptions(broker.url))
  link.start()
  t.teardown(() => link.stop())
  await waitFor(() => link.isUp, { what: 'link up' })
  const connect = async (): Promise<mqtt.MqttClient> => {
    const c = mqtt.connect(broker.url, { protocolVersion: 4, reconnectPeriod: 0 })
    c.on('error', () => {})
    await once(c, 'connect')
    t.teardown(() => c.endAsync(true))
    return c
  }
  let client = await connect()
  return {
    link,
    publish: async (topic, text) => { await client.publishAsync(topic, text, { qos: 1 }) },
    async restartBroker () {
      await broker.restart()
      client = await connect()
    }
  }
}

t.test('a subscription with deliverAs hands messages of that topic to its handler', async (t) => {
  const { link, publish } = await setup(t)
  const got: Array<[string, string]> = []
  link.subscribe('jobs/+', 1, (payload, topic) => { got.push([topic, payload.toString()]) }, { deliverAs: 'jobs/a' })
  // Each round proves the SUBSCRIBE is in place before the assertions rely on it.
  await waitFor(async () => { await publish('jobs/a', 'ping'); return got.length > 0 }, { intervalMs: 50, what: 'the subscription in place' })
  got.length = 0
  await publish('jobs/b', 'matched by the filter, not routed')
  await publish('jobs/a', 'routed')
  await waitFor(() => got.some(([, text]) => text === 'routed'), { what: 'the routed message' })
  // Late pings from the readiness loop may still arrive (in order, before 'routed'); ignore them.
  t.same(got.filter(([, text]) => text !== 'ping'), [['jobs/a', 'routed']])
})

t.test('unsubscribing the filter stops the delivery and leaves other routes alone', async (t) => {
  const { link, publish } = await setup(t)
  const viaFilter: string[] = []
  const plain: string[] = []
  link.subscribe('jobs/+', 1, (p) => { viaFilter.push(p.toString()) }, { deliverAs: 'jobs/a' })
  link.subscribe('other', 1, (p) => { plain.push(p.toString()) })
  await waitFor(async () => { await publish('jobs/a', 'x'); await publish('other', 'y'); return viaFilter.length > 0 && plain.length > 0 }, { intervalMs: 50, what: 'both subscriptions in place' })
  link.unsubscribe('jobs/+')
  t.equal(link.subscriptionCount, 1)
  const before = viaFilter.length
  await publish('jobs/a', 'after unsubscribe')
  await publish('other', 'still here')
  await waitFor(() => plain.includes('still here'), { what: 'the other subscription still delivering' })
  await holdsFor(() => viaFilter.length === before, { forMs: 100, what: 'nothing delivered for the removed filter' })
  t.pass('the removed filter delivers nothing')
})

t.test('a deliverAs subscription is restored after the broker restarts', async (t) => {
  const { link, publish, restartBroker } = await setup(t)
  const got: string[] = []
  link.subscribe('jobs/+', 1, (p) => { got.push(p.toString()) }, { deliverAs: 'jobs/a' })
  await restartBroker()
  await waitFor(() => link.isUp, { timeoutMs: 10_000, what: 'link back up' })
  await waitFor(async () => { await publish('jobs/a', 'after restart'); return got.includes('after restart') }, { intervalMs: 100, what: 'delivery after the restart' })
  t.pass('restored')
})
