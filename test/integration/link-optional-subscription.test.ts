/**
 * A broker that refuses one subscription (SUBACK 0x80, as an ACL written before that topic
 * existed does): a required one rebuilds the link, as it always has (nothing flows without it);
 * an optional one (the resume topics, src/cluster/stream-resume.ts and the worker) is logged and
 * the link carries on with everything else.
 */
import net from 'node:net'
import { Aedes } from 'aedes'
import t, { type Test } from 'tap'
import { createMqttLink, type MqttLink } from '../../src/mqtt/mqtt-link.js'
import { testLinkOptions } from '../fixtures/test-link.js'
import { waitFor } from '../fixtures/wait-for.js'

const REFUSED = 'x/refused'

async function brokerRefusing (t: Test): Promise<string> {
  const broker = await Aedes.createBroker()
  broker.authorizeSubscribe = (_client, sub, callback) => { callback(null, sub.topic === REFUSED ? null : sub) }
  const server = net.createServer((socket) => { broker.handle(socket) })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(async () => {
    await new Promise<void>((resolve) => { broker.close(() => { resolve() }) })
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

async function linkOn (t: Test, url: string): Promise<MqttLink> {
  const link = createMqttLink(testLinkOptions(url))
  t.teardown(async () => { await link.stop() })
  return link
}

t.test('a refused optional subscription is logged and the link stays up; the others deliver', async (t) => {
  const url = await brokerRefusing(t)
  const link = await linkOn(t, url)
  const got: string[] = []
  link.subscribe('x/required', 1, (payload) => { got.push(payload.toString()) })
  link.subscribe(REFUSED, 1, () => {}, { optional: true })
  link.start()
  await waitFor(() => link.isUp, { what: 'link up' })
  const transitions = link.recentTransitions().length
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.equal(link.recentTransitions().length, transitions, 'no rebuild')
  t.ok(link.isUp)
  link.publish('x/required', 'hello', 1)
  await waitFor(() => got.includes('hello'), { what: 'a message on the other subscription' })
})

t.test('a refused required subscription rebuilds the link, as before', async (t) => {
  const url = await brokerRefusing(t)
  const link = await linkOn(t, url)
  link.subscribe(REFUSED, 1, () => {})
  link.start()
  await waitFor(() => link.recentTransitions().some((tr) => tr.from === 'connected' && tr.to === 'reconnecting'), { timeoutMs: 10_000, what: 'the link rebuilt after the refusal' })
  t.pass('rebuilt')
})
