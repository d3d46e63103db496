/**
 * The broker is not open: the embedded broker requires its generated accounts and holds each to
 * its role's topics (src/mqtt/broker-acl.ts), and deploy/mosquitto/acl, the same table for
 * Mosquitto, is run in a real Mosquitto with a real gateway and worker behind it. A worker can
 * answer and publish hints, but not read other gateways' replies, users' hints, or llm/#.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import mqtt, { type MqttClient } from 'mqtt'
import t, { type Test } from 'tap'
import { BROKER_ACL, covers, mayPublish, maySubscribe, mosquittoAcl } from '../../src/mqtt/broker-acl.js'
import { findExecutable } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { startMosquittoBroker } from '../fixtures/mosquitto-broker.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

const ACL_FILE = fileURLToPath(new URL('../../deploy/mosquitto/acl', import.meta.url))

async function client (t: Test, url: string, clientId = `acl-${Math.random().toString(16).slice(2, 10)}`): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, clientId })
  c.on('error', () => {})
  t.teardown(async () => { await c.endAsync(true) })
  return c
}

/** The QoS the broker granted, 128 for a refusal (which mqtt.js 5 reports as an error). */
async function granted (c: MqttClient, topic: string): Promise<number> {
  try {
    const [grant] = await c.subscribeAsync(topic, { qos: 1 })
    return grant?.qos ?? -1
  } catch (err) {
    if (/Subscribe error/.test((err as Error).message)) return 128
    throw err
  }
}

/**
 * A publish the broker refuses may never be acknowledged (aedes drops the connection, and the
 * client waits to resend): wait for it a short while at most.
 */
async function settled (publish: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([publish.catch(() => {}), new Promise<void>((resolve) => { timer = setTimeout(resolve, 1000) })])
  clearTimeout(timer)
}

/** Whether `reader` receives what `writer` publishes on `topic` within a short wait. */
async function flows (reader: MqttClient, writer: MqttClient, topic: string, body?: Buffer): Promise<boolean> {
  const marker = body ?? `m-${Math.random().toString(16).slice(2)}`
  let seen = false
  const onMessage = (_topic: string, payload: Buffer): void => { if (payload.equals(Buffer.from(marker))) seen = true }
  reader.on('message', onMessage)
  try {
    await settled(writer.publishAsync(topic, marker, { qos: 1 }))
    try { await waitFor(() => seen, { timeoutMs: 500, what: 'the message' }) } catch { /* not delivered */ }
    return seen
  } finally {
    reader.off('message', onMessage)
  }
}

t.test('the rules: a subscription must stay inside what a rule allows', async (t) => {
  t.ok(covers('llm/hints/+', 'llm/hints/abc'))
  t.ok(covers('llm/hints/+', 'llm/hints/+'))
  t.notOk(covers('llm/hints/+', 'llm/hints/#'))
  t.notOk(covers('llm/hints/+', 'llm/#'))
  t.notOk(covers('llm/chat/request', 'llm/chat/request/x'))
  t.ok(maySubscribe('worker', 'llm', 'w1', '$share/g/llm/chat/request'), 'a shared subscription is judged by its topic')
  t.notOk(maySubscribe('worker', 'llm', 'w1', 'llm/chat/reply/+'), 'a worker reads no replies')
  t.notOk(maySubscribe('worker', 'llm', 'w1', 'llm/hints/s1'), 'nor hints')
  t.ok(maySubscribe('gateway', 'llm', 'gw1', 'llm/chat/reply/gw1'), 'a gateway reads its own replies')
  t.notOk(maySubscribe('gateway', 'llm', 'gw1', 'llm/chat/reply/gw2'), 'and only its own')
  t.notOk(maySubscribe('gateway', 'llm', '+', 'llm/chat/reply/+'), 'a client id with a wildcard widens nothing')
  t.ok(mayPublish('worker', 'llm', 'w1', 'llm/chat/reply/gw1'))
  t.notOk(mayPublish('worker', 'llm', 'w1', 'llm/chat/request'), 'a worker sends no requests')
  t.notOk(mayPublish('gateway', 'llm', 'gw1', 'llm/hints/s1'), 'a gateway sends no hints')
})

t.test('deploy/mosquitto/acl is the table of src/mqtt/broker-acl.ts', async (t) => {
  const meaningful = (text: string): string[] => text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  const shipped = meaningful(readFileSync(ACL_FILE, 'utf8'))
  const expected = meaningful(mosquittoAcl('llm'))
  // The shipped file may add the Compose health check's $SYS read to the gateway; nothing else.
  t.same(shipped.filter((l) => !l.startsWith('topic read $SYS/')), expected)
  t.equal(Object.keys(BROKER_ACL).length, 2)
})

t.test('the embedded broker refuses anonymous and wrong logins, and holds each account to its topics', async (t) => {
  const gw = await startGateway(t, {})
  await waitFor(() => gw.tether.link.isUp, { what: 'the gateway on its embedded broker' })
  const plain = new URL(gw.tether.mqttUrl)
  const accounts = JSON.parse(readFileSync(join(gw.dataDir, 'mqtt-credentials.json'), 'utf8')) as Record<'gateway' | 'worker', { username: string, password: string }>
  const as = (account: { username: string, password: string } | null): string => {
    const u = new URL(`mqtt://127.0.0.1:${plain.port}`)
    if (account !== null) { u.username = account.username; u.password = account.password }
    return u.toString()
  }
  await t.rejects(mqtt.connectAsync(as(null), { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000 }), 'anonymous is refused')
  await t.rejects(mqtt.connectAsync(as({ username: accounts.worker.username, password: 'wrong-password-123' }), { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000 }), 'a wrong password is refused')
  const worker = await client(t, as(accounts.worker))
  const other = await client(t, as(accounts.worker))
  t.equal(await granted(worker, 'llm/#'), 128, 'a worker may not subscribe to llm/#')
  t.equal(await granted(worker, 'llm/chat/reply/+'), 128, 'nor to replies')
  t.equal(await granted(worker, 'llm/hints/+'), 128, 'nor to hints')
  t.equal(await granted(worker, 'llm/chat/request'), 1, 'requests it may read')
  t.notOk(await flows(worker, other, 'llm/chat/reply/anyone'), 'another worker\'s reply does not reach it')
  const gateway = await client(t, as(accounts.gateway))
  t.equal(await granted(gateway, 'llm/chat/request'), 128, 'the gateway account reads no requests')
  await t.rejects(mqtt.connectAsync(as(accounts.worker), { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 3000, clientId: gw.tether.link.clientId }),
    'a worker account cannot take the gateway\'s client id (it would throw the gateway off the broker)')
  t.ok(gw.tether.link.isUp, 'and the gateway\'s link stayed up')
  // The broker lives in the gateway's process: what it would hold is the gateway's memory.
  const listener = await client(t, as(accounts.gateway), gw.tether.link.clientId + '-probe-listener')
  await listener.subscribeAsync('llm/hints/+', { qos: 1 })
  t.notOk(await flows(listener, await client(t, as(accounts.worker)), 'llm/hints/big', Buffer.alloc(2 * 1024 * 1024, 0x61)), 'a payload over 1 MiB is refused')
  const retained = await client(t, as(accounts.worker))
  await settled(retained.publishAsync('llm/hints/kept', 'sticky', { qos: 1, retain: true }))
  const late = await client(t, as(accounts.gateway), gw.tether.link.clientId + '-late')
  let replayed = false
  late.on('message', () => { replayed = true })
  await late.subscribeAsync('llm/hints/kept', { qos: 1 })
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.notOk(replayed, 'a retained hint is refused: nothing replays to a later subscriber')
  // The demo responder uses the worker account: the whole chat path still works.
  const chat = await gw.chat('acl', 'hello')
  t.equal(chat.status, 200, chat.text)
  t.match(chat.json.reply.content, /\[demo responder\]/)
})

const mosquittoBin = findExecutable('mosquitto')
const passwdBin = findExecutable('mosquitto_passwd')
/** A private Mosquitto with the two accounts and `acl` (a file's text, default the shipped one); null when Mosquitto is missing (the test fails). */
async function mosquittoWithAcl (t: Test, acl?: string): Promise<((user: 'tether-gateway' | 'tether-worker') => string) | null> {
  if (mosquittoBin === undefined || passwdBin === undefined) {
    t.fail('mosquitto and mosquitto_passwd are needed (apt-get install mosquitto; .ci/run installs it)')
    return null
  }
  const dir = mkdtempSync(join(tmpdir(), 'tether-acl-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  let aclFile = ACL_FILE
  if (acl !== undefined) { aclFile = join(dir, 'acl'); writeFileSync(aclFile, acl) }
  const passwd = join(dir, 'passwd')
  const passwords = { 'tether-gateway': 'gateway-pass-123456', 'tether-worker': 'worker-pass-123456' }
  writeFileSync(passwd, '')
  for (const [user, password] of Object.entries(passwords)) execFileSync(passwdBin, ['-b', passwd, user, password])
  const broker = await startMosquittoBroker({ bin: mosquittoBin, extraConfig: ['allow_anonymous false', `password_file ${passwd}`, `acl_file ${aclFile}`] })
  t.teardown(() => broker.close())
  return (user) => `mqtt://${user}:${passwords[user]}@127.0.0.1:${broker.port}`
}

t.test('deploy/mosquitto/acl in a real Mosquitto: gateway and worker work, a worker reads nothing it should not', async (t) => {
  const url = await mosquittoWithAcl(t)
  if (url === null) return
  const gw = await startGateway(t, { MQTT_URL: url('tether-gateway'), INSTANCE_ID: 'gw-acl-1' })
  const worker = await startScriptedWorker({ url: url('tether-worker'), behaviour: echo })
  t.teardown(() => worker.stop())
  await waitFor(() => gw.tether.link.isUp, { what: 'the gateway link up through the ACL (its probe topic is allowed)' })
  const chat = await gw.chat('acl', 'through mosquitto')
  t.equal(chat.status, 200, chat.text)
  t.equal(chat.json.reply.content, 'echo: through mosquitto')
  const snoop = await client(t, url('tether-worker'))
  await snoop.subscribeAsync(['llm/#', 'llm/chat/reply/+', 'llm/hints/+'], { qos: 1 })
  const other = await client(t, url('tether-worker'))
  t.notOk(await flows(snoop, other, 'llm/chat/reply/gw-acl-1'), 'a worker cannot read a gateway\'s replies')
  t.notOk(await flows(snoop, other, 'llm/hints/some-session'), 'nor users\' hints')
  const answer = await gw.chat('acl', 'again')
  t.equal(answer.status, 200, 'chats still flow')
})

t.test('deploy/mosquitto/acl as it was before resume on any gateway: the gateway\'s link stays up and chats flow (the refusal itself: link-optional-subscription.test.ts)', async (t) => {
  const url = await mosquittoWithAcl(t, readFileSync(ACL_FILE, 'utf8').split('\n').filter((line) => !/resume/.test(line)).join('\n'))
  if (url === null) return
  const gw = await startGateway(t, { MQTT_URL: url('tether-gateway'), INSTANCE_ID: 'gw-acl-old' })
  const worker = await startScriptedWorker({ url: url('tether-worker'), behaviour: echo })
  t.teardown(() => worker.stop())
  await waitFor(() => gw.tether.link.isUp, { what: 'the gateway link up' })
  const transitions = gw.tether.link.recentTransitions().length
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.equal(gw.tether.link.recentTransitions().length, transitions, 'no rebuild for a refused optional subscription')
  const chat = await gw.chat('acl-old', 'still works')
  t.equal(chat.status, 200, chat.text)
})
