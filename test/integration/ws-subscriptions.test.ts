/**
 * Subscriptions follow sockets: one MQTT subscription per session however many hints sockets
 * it has, taken with the first, dropped with the last, restored after every reconnect of the
 * link (docs/websocket.md, "Hints").
 *
 * The broker's side is observed on the wire. Neither aedes nor Mosquitto lists a client's
 * subscriptions, so the gateway's MQTT connection runs through a proxy in this file that
 * reads MQTT 3.1.1 packets both ways: the SUBSCRIBE/UNSUBSCRIBE filters the broker has
 * acknowledged (SUBACK/UNSUBACK) are the broker's subscription set for that connection, and
 * the PUBLISH packets the broker sends it show which sessions' hints it actually routes.
 */
import net from 'node:net'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, mqttPeer, untilHintsFlow, wsUrl, type MqttPeer, type TestSocket } from '../fixtures/ws-client.js'

const SESSIONS = 100
const SOCKETS_PER_SESSION = 10
const SEED = 0x7e7e_2024
const HINTS_PREFIX = 'llm/hints/'

/** mulberry32: a small seeded PRNG, so a failing order can be replayed. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** Splits a byte stream into MQTT packets: (type, flags, body). */
function packetReader (onPacket: (type: number, flags: number, body: Buffer) => void): (chunk: Buffer) => void {
  let buffer = Buffer.alloc(0)
  return (chunk) => {
    buffer = Buffer.concat([buffer, chunk])
    for (;;) {
      if (buffer.length < 2) return
      // MQTT 3.1.1 2.2.3: the remaining length is a varint of at most 4 bytes.
      let length = 0
      let multiplier = 1
      let i = 1
      for (;;) {
        if (i >= buffer.length) return
        const byte = buffer[i] as number
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        i++
        if ((byte & 0x80) === 0) break
        if (i > 4) throw new Error('malformed remaining length')
      }
      if (buffer.length < i + length) return
      const first = buffer[0] as number
      onPacket(first >> 4, first & 0x0f, buffer.subarray(i, i + length))
      buffer = buffer.subarray(i + length)
    }
  }
}

function readString (body: Buffer, at: number): [string, number] {
  const len = body.readUInt16BE(at)
  return [body.subarray(at + 2, at + 2 + len).toString('utf8'), at + 2 + len]
}

/** What the broker holds for the gateway's current connection, as seen on the wire. */
interface Wire {
  /** Hint filters the broker has acknowledged subscribing (and not acknowledged unsubscribing). */
  acked: Set<string>
  /** Hint filters subscribed and not unsubscribed, as sent by the gateway. */
  requested: Set<string>
  /** A SUBSCRIBE for a filter already held, or an UNSUBSCRIBE for one not held. */
  violations: string[]
  /** PUBLISH packets the broker sent the gateway on hint topics. */
  publishes: Array<{ topic: string, payload: string }>
  connections: number
}

interface SniffingProxy {
  url: string
  wire: Wire
  close: () => Promise<void>
}

async function startSniffingProxy (brokerPort: number): Promise<SniffingProxy> {
  const wire: Wire = { acked: new Set(), requested: new Set(), violations: [], publishes: [], connections: 0 }
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    // A new connection is a clean session (the link connects with clean: true): nothing held.
    wire.acked = new Set()
    wire.requested = new Set()
    wire.connections++
    const conn = wire.connections
    const pendingSub = new Map<number, string[]>()
    const pendingUnsub = new Map<number, string[]>()
    const live = (): boolean => conn === wire.connections
    const upstream = net.connect({ host: '127.0.0.1', port: brokerPort })
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.setNoDelay(true)
      s.on('error', () => {})
      s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy() })
    }
    const fromGateway = packetReader((type, _flags, body) => {
      if (type === 8 || type === 10) {
        const pid = body.readUInt16BE(0)
        const filters: string[] = []
        let at = 2
        while (at < body.length) {
          const [filter, next] = readString(body, at)
          at = type === 8 ? next + 1 : next
          if (filter.startsWith(HINTS_PREFIX)) filters.push(filter)
        }
        for (const f of filters) {
          if (type === 8 && wire.requested.has(f)) wire.violations.push(`SUBSCRIBE ${f} while subscribed`)
          if (type === 10 && !wire.requested.has(f)) wire.violations.push(`UNSUBSCRIBE ${f} while not subscribed`)
          if (type === 8) wire.requested.add(f); else wire.requested.delete(f)
        }
        ;(type === 8 ? pendingSub : pendingUnsub).set(pid, filters)
      }
    })
    const fromBroker = packetReader((type, flags, body) => {
      if (!live()) return
      if (type === 9) {
        const pid = body.readUInt16BE(0)
        const filters = pendingSub.get(pid) ?? []
        pendingSub.delete(pid)
        // SUBACK return codes follow the packet id; 0x80 is a refusal (MQTT 3.1.1 3.9.3).
        for (const f of filters) wire.acked.add(f)
        if (body.subarray(2).includes(0x80)) wire.violations.push(`SUBACK refused a filter (${filters.join(', ')})`)
      } else if (type === 11) {
        const pid = body.readUInt16BE(0)
        for (const f of pendingUnsub.get(pid) ?? []) wire.acked.delete(f)
        pendingUnsub.delete(pid)
      } else if (type === 3) {
        const [topic, next] = readString(body, 0)
        if (!topic.startsWith(HINTS_PREFIX)) return
        const qos = (flags >> 1) & 3
        wire.publishes.push({ topic, payload: body.subarray(qos > 0 ? next + 2 : next).toString('utf8') })
      }
    })
    client.on('data', (d: Buffer) => { fromGateway(d); upstream.write(d) })
    upstream.on('data', (d: Buffer) => { fromBroker(d); client.write(d) })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `mqtt://127.0.0.1:${port}`,
    wire,
    async close () {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => { resolve() }))
    }
  }
}

const FAST_LINK = {
  MQTT_BACKOFF_BASE_MS: '50',
  MQTT_BACKOFF_CAP_MS: '500',
  MQTT_CONNECT_TIMEOUT_MS: '1000',
  MQTT_MAX_RECONNECT_ATTEMPTS: '1000',
  THREAD_TASK_TIMEOUT_MS: '60000'
}

const broker = await startTestBroker()
t.teardown(() => broker.close())
const proxy = await startSniffingProxy(broker.port)
t.teardown(() => proxy.close())
// MQTT_PROTOCOL 3.1.1: the proxy reads 3.1.1 packets (auto would speak 5 to a Mosquitto).
const gw = await startGateway(t, { ...FAST_LINK, MQTT_URL: proxy.url, MQTT_PROTOCOL: '3.1.1' })
await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
const { wire } = proxy
// The link's own subscriptions (replies, probe): what is left with no hints socket open.
const baseSubscriptions = gw.tether.link.subscriptionCount

const sessionIds: string[] = []
for (let i = 0; i < SESSIONS; i++) sessionIds.push(await gw.sessionId(`s${i}`))
const sentinelId = await gw.sessionId('sentinel')
const path = (sessionId: string): string => `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`

const sorted = (xs: Iterable<string>): string[] => [...xs].sort()

/** The hint filters of the sessions that have at least one open socket. */
function expectedFilters (open: Map<string, Set<TestSocket>>): string[] {
  return sorted([...open].filter(([, set]) => set.size > 0).map(([id]) => `${HINTS_PREFIX}${id}`))
}

async function brokerMatches (open: Map<string, Set<TestSocket>>, what: string): Promise<void> {
  const want = expectedFilters(open)
  await waitFor(() => {
    const got = sorted(wire.acked)
    return got.length === want.length && got.every((f, i) => f === want[i])
  // Generous: on a loaded 2-core machine a SUBACK can take seconds; the check is exactness.
  }, { timeoutMs: 20_000, intervalMs: 2, what: `broker-side subscriptions to equal the sessions with open sockets (${what})` }).catch(async (err: Error) => {
    // Everything that tells a lost SUBSCRIBE from a socket the server dropped from a reconnect.
    const got = sorted(wire.acked)
    const closedOpen = [...open].flatMap(([id, set]) => [...set].filter((s) => s.isClosed).map((s) => `${id}: ${s.closeInfo}`))
    const details = {
      missing: want.filter((f) => !got.includes(f)),
      extra: got.filter((f) => !want.includes(f)),
      sockets_closed_under_the_test: closedOpen,
      requested_not_acked: sorted(wire.requested).filter((f) => !got.includes(f)),
      violations: wire.violations,
      proxy_connections: wire.connections,
      link: { state: gw.tether.link.state, subscriptions: gw.tether.link.subscriptionCount, transitions: gw.tether.link.recentTransitions() },
      ws_closed: await gw.request('GET', '/metrics').then((m) => m.text.split('\n').filter((l) => l.startsWith('tether_ws_closed_total')), () => [])
    }
    throw new Error(`${err.message}; ${JSON.stringify(details)}`)
  })
}

let round = 0
/**
 * Publishes a probe on every session's hint topic, then one on the sentinel session's. The
 * broker sends one client's QoS 1 messages on to a subscriber in order, so once the sentinel's
 * arrives, every probe the broker was going to route to the gateway has arrived too.
 */
async function probeRound (peer: MqttPeer, sentinel: TestSocket, open: Map<string, Set<TestSocket>>): Promise<{ routed: string[], want: string[] }> {
  round++
  const marker = `round-${round}`
  const from = wire.publishes.length
  await Promise.all(sessionIds.map(async (id) => await peer.publish(`${HINTS_PREFIX}${id}`, JSON.stringify({ round: marker }))))
  await peer.publish(`${HINTS_PREFIX}${sentinelId}`, JSON.stringify({ round: marker }))
  await sentinel.next(`the sentinel of ${marker}`, (f) => f.data?.round === marker)
  const routed = sorted(wire.publishes.slice(from).filter((p) => p.payload.includes(`"${marker}"`) && p.topic !== `${HINTS_PREFIX}${sentinelId}`).map((p) => p.topic))
  // Every open socket gets the probe of its session, exactly once.
  for (const [id, set] of open) {
    if (id === sentinelId) continue // its probe was taken above
    for (const s of set) await s.next(`${marker} on an open socket of ${id}`, (f) => f.data?.round === marker)
  }
  for (const [, set] of open) for (const s of set) if (s.untaken().some((f) => f.data?.round === marker)) throw new Error(`${marker} delivered twice to a socket`)
  return { routed, want: expectedFilters(open) }
}

t.test('1,000 sockets over 100 sessions opened and closed in a seeded random order: the broker holds exactly the sessions with open sockets at every step', async (t) => {
  const started = Date.now()
  const random = prng(SEED)
  const peer = await mqttPeer(t, broker.url)
  const sentinel = await connect(t, wsUrl(gw.port, path(sentinelId)))
  await untilHintsFlow(peer, sentinelId, [sentinel])
  // The sentinel's own subscription is always there.
  const open = new Map<string, Set<TestSocket>>([[sentinelId, new Set([sentinel])]])
  for (const id of sessionIds) open.set(id, new Set())

  const unopened: string[] = []
  for (const id of sessionIds) for (let k = 0; k < SOCKETS_PER_SESSION; k++) unopened.push(id)
  const openList: Array<[string, TestSocket]> = []
  const STEPS = 2 * SESSIONS * SOCKETS_PER_SESSION
  const PROBE_EVERY = 20
  let maxOpen = 0
  let subscribes = 0
  let unsubscribes = 0
  let probes = 0
  for (let step = 0; step < STEPS; step++) {
    // Mostly opening in the first third, mixed in the middle, mostly closing at the end: the
    // population rises to a couple of hundred sockets while sessions keep emptying and refilling.
    const third = step / STEPS
    const pOpen = third < 1 / 3 ? 0.6 : third < 2 / 3 ? 0.5 : 0.4
    const doOpen = openList.length === 0 || (unopened.length > 0 && random() < pOpen)
    if (doOpen) {
      const id = unopened.splice(Math.floor(random() * unopened.length), 1)[0] as string
      const set = open.get(id) as Set<TestSocket>
      if (set.size === 0) subscribes++
      const s = await connect(t, wsUrl(gw.port, path(id)))
      set.add(s)
      openList.push([id, s])
    } else {
      const [id, s] = openList.splice(Math.floor(random() * openList.length), 1)[0] as [string, TestSocket]
      const set = open.get(id) as Set<TestSocket>
      set.delete(s)
      if (set.size === 0) unsubscribes++
      await s.close()
    }
    maxOpen = Math.max(maxOpen, openList.length)
    await brokerMatches(open, `step ${step}`)
    if (step % PROBE_EVERY === PROBE_EVERY - 1 || step === STEPS - 1) {
      const { routed, want } = await probeRound(peer, sentinel, open)
      t.same(routed, want.filter((f) => f !== `${HINTS_PREFIX}${sentinelId}`), `step ${step}: the broker routed hints for exactly the ${want.length - 1} sessions with open sockets`)
      const sessions = want.length
      t.equal(gw.tether.link.subscriptionCount, baseSubscriptions + sessions, `step ${step}: the link holds one subscription per session`)
      t.equal(await gw.metric('tether_ws_hint_subscriptions'), sessions, `step ${step}: tether_ws_hint_subscriptions`)
      const health = await gw.request('GET', '/api/health/mqtt')
      t.equal(health.json?.subscribers?.hint_sessions, sessions, `step ${step}: /api/health/mqtt subscribers.hint_sessions`)
      probes++
    }
  }
  t.same(wire.violations, [], 'never a second SUBSCRIBE for a held session, never an UNSUBSCRIBE for one not held')
  t.same(sorted(wire.acked), [`${HINTS_PREFIX}${sentinelId}`], 'all closed: only the sentinel\'s subscription is left')
  t.ok(subscribes >= SESSIONS && unsubscribes >= SESSIONS, `sessions emptied and refilled: ${subscribes} first sockets, ${unsubscribes} last sockets, up to ${maxOpen} sockets open at once`)
  t.comment(`seed ${SEED}: ${STEPS} steps, ${probes} probe rounds, ${Math.round((Date.now() - started) / 1000)} s`)
})

t.test('after the broker is killed and restarted, the subscriptions are restored and hints reach every open socket again', async (t) => {
  const peer = await mqttPeer(t, broker.url)
  const sentinel = await connect(t, wsUrl(gw.port, path(sentinelId)))
  const open = new Map<string, Set<TestSocket>>([[sentinelId, new Set([sentinel])]])
  for (const id of sessionIds) open.set(id, new Set())
  // Every third session, with one to three sockets.
  for (let i = 0; i < SESSIONS; i += 3) {
    const id = sessionIds[i] as string
    for (let k = 0; k < 1 + (i % 5) % 3; k++) (open.get(id) as Set<TestSocket>).add(await connect(t, wsUrl(gw.port, path(id))))
  }
  await brokerMatches(open, 'before the crash')
  await untilHintsFlow(peer, sentinelId, [sentinel])
  const before = await probeRound(peer, sentinel, open)
  t.same(before.routed, before.want.filter((f) => f !== `${HINTS_PREFIX}${sentinelId}`), 'hints flow before the crash')

  const connections = wire.connections
  await broker.kill()
  await waitFor(() => !gw.tether.link.isUp, { what: 'the link noticed the broker gone' })
  // While the link is down, one session gets its first socket and another loses its last.
  const joined = sessionIds[2] as string
  open.get(joined)?.add(await connect(t, wsUrl(gw.port, path(joined))))
  const left = sessionIds[3] as string
  for (const s of [...(open.get(left) as Set<TestSocket>)]) { await s.close(); open.get(left)?.delete(s) }
  t.equal(await gw.metric('tether_ws_hint_subscriptions'), expectedFilters(open).length, 'the hub follows sockets while the link is down')
  sentinel.send({ type: 'state', data: { while: 'down' } })
  const refusal = await sentinel.next('the link_down error frame', (f) => f.type === 'error')
  t.equal(refusal.error, 'link_down', 'a state frame while the link is down is answered link_down')
  t.notOk(sentinel.isClosed, 'and the socket stays open')
  await broker.restart()
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'the link back' })
  t.ok(wire.connections > connections, 'the gateway reconnected through the proxy')
  t.ok([...open.values()].every((set) => [...set].every((s) => !s.isClosed)), 'the sockets stayed open through the outage')

  await brokerMatches(open, 'after the restart')
  t.same(wire.violations, [], 'restored once each')
  t.ok(wire.acked.has(`${HINTS_PREFIX}${joined}`) && !wire.acked.has(`${HINTS_PREFIX}${left}`), 'restored as the sockets are now, not as they were before the crash')
  const fresh = await mqttPeer(t, broker.url)
  const after = await probeRound(fresh, sentinel, open)
  t.same(after.routed, after.want.filter((f) => f !== `${HINTS_PREFIX}${sentinelId}`), 'the restarted broker routes hints for exactly the sessions with open sockets')

  // And the hub keeps following sockets on the new connection.
  const first = [...(open.get(sessionIds[0] as string) as Set<TestSocket>)]
  for (const s of first) { await s.close(); open.get(sessionIds[0] as string)?.delete(s) }
  await brokerMatches(open, 'after closing a session\'s sockets on the new connection')
  const late = await connect(t, wsUrl(gw.port, path(sessionIds[1] as string)))
  open.get(sessionIds[1] as string)?.add(late)
  await brokerMatches(open, 'after opening a new session\'s socket on the new connection')
  const last = await probeRound(fresh, sentinel, open)
  t.same(last.routed, last.want.filter((f) => f !== `${HINTS_PREFIX}${sentinelId}`), 'and routes exactly those')
})
