/**
 * Scale-out, end to end (run by `npm run test:brokers`): three gateways behind a real nginx
 * (deploy/nginx/tether.conf with three upstream servers), two announced reference workers, a
 * 3-node NATS cluster with MQTT (each process starts on a different node) and one PostgreSQL.
 *
 * - 2,000 chats through nginx at c=64: every one answered once, every request run once by a worker.
 * - A hint published once, on the third node, reaches every socket of its session on all three
 *   gateways once (sockets opened on each gateway and through nginx).
 * - One gateway SIGKILLed while 100 WebSocket and 10 event streams run through it: each client,
 *   reconnecting through nginx (`resume`, or GET /api/chatbot/streams with Last-Event-ID), gets
 *   the rest of its answer (its worker re-sends it) within 2 s or the stream ends
 *   stream_interrupted; nothing is left in flight anywhere.
 * - One NATS node SIGKILLed: whoever was on it reconnects to another node, chats go on.
 * - Failed logins spread over the gateways trip the limit at the same count as on one.
 */
import type { ChildProcess } from 'node:child_process'
import { appendFileSync, chmodSync, mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { findExecutable } from '../fixtures/broker.js'
import { createTestDatabase } from '../fixtures/database.js'
import { sseDelta, sseEnd, sseHead, startFakeModel, lastUser, type FakeModel } from '../fixtures/fake-model.js'
import { startNginx } from '../fixtures/nginx.js'
import { freePort } from '../fixtures/ports.js'
import { startNatsCluster, type NatsCluster } from '../fixtures/process-brokers.js'
import { spawnBuilt } from '../fixtures/run-ts.js'
import { waitFor } from '../fixtures/wait-for.js'
import { sseParser, type SseEvent } from '../fixtures/sse-events.js'
import { httpRequest, type HttpAnswer } from '../fixtures/http-request.js'
import { connect, mqttPeer, untilHintsFlow, wsUrl, type TestSocket } from '../fixtures/ws-client.js'

const SECRET = 'cluster-test-secret-cluster-test-secret-0123456789'
const CHATS = 2000
const CONCURRENCY = 64
const STREAMS = 100
const SSE_STREAMS = 10
const LOGIN_MAX_FAILURES = 5
/** Tokens of a streamed answer and the pause between them: 100 streams are all mid-way when the gateway dies. */
const STREAM_TOKENS = 12
const TOKEN_MS = 250

/** A keep-alive agent for the 2,000 chats: nginx and the gateways are measured, not TCP handshakes. */
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })

/** One JSON request; `keepAlive` sends it on the shared agent instead of a connection of its own. */
function request (port: number, method: string, path: string, body?: unknown, headers: Record<string, string> = {}, keepAlive = false): Promise<HttpAnswer> {
  return httpRequest(port, method, path, { headers: { 'content-type': 'application/json', ...headers }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), ...(keepAlive ? { agent } : {}) })
}

const post = async (port: number, path: string, body: unknown, token: string): Promise<HttpAnswer> => await request(port, 'POST', path, body, { authorization: `Bearer ${token}` }, true)

interface Proc { name: string, child: ChildProcess, port: number, log: () => string }

function track (t: Test, name: string, child: ChildProcess, port = 0): Proc {
  let out = ''
  // CLUSTER_LOG_DIR=<dir>: each process's whole log there, for a failure to be read after.
  const dir = process.env.CLUSTER_LOG_DIR
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-20_000)
    if (dir !== undefined) appendFileSync(join(dir, `${name}.log`), d)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  t.teardown(() => { child.kill('SIGKILL') })
  return { name, child, port, log: () => out }
}

/** The node list starting at node `first`: each process connects first to a different node. */
function urlsFrom (cluster: NatsCluster, first: number): string {
  const urls = cluster.nodes.map((n) => n.url)
  return [...urls.slice(first), ...urls.slice(0, first)].join(',')
}

async function metric (port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = (await request(port, 'GET', '/metrics')).text
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line)
    if (m?.[1] !== name) continue
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3])
  }
  return sum
}

interface SseStream { status: Promise<number>, requestId: Promise<string>, events: SseEvent[], ended: Promise<void>, until: (match: (e: SseEvent) => boolean, timeoutMs: number) => Promise<SseEvent> }

/** An event stream (a streamed chat, or a resume of one), its events parsed as they come. */
function sse (port: number, method: 'POST' | 'GET', path: string, token: string, body?: unknown, lastEventId?: string): SseStream {
  const events: SseEvent[] = []
  const wake = new Set<() => void>()
  let finished = false
  let resolveEnded!: () => void
  const ended = new Promise<void>((resolve) => { resolveEnded = resolve })
  const finish = (): void => { if (!finished) { finished = true; resolveEnded(); for (const w of wake) w() } }
  const headers: Record<string, string> = { accept: 'text/event-stream', 'content-type': 'application/json', authorization: `Bearer ${token}`, ...(lastEventId !== undefined ? { 'last-event-id': lastEventId } : {}) }
  const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, headers })
  let resolveHead!: (v: { status: number, requestId: string }) => void
  const head = new Promise<{ status: number, requestId: string }>((resolve) => { resolveHead = resolve })
  req.on('response', (res) => {
    resolveHead({ status: res.statusCode ?? 0, requestId: String(res.headers['x-request-id'] ?? '') })
    const feed = sseParser(events)
    res.setEncoding('utf8')
    res.on('data', (d: string) => {
      feed(d)
      for (const w of wake) w()
    })
    res.on('close', finish)
    res.on('error', finish)
  })
  req.on('error', () => { resolveHead({ status: 0, requestId: '' }); finish() })
  req.end(body === undefined ? undefined : JSON.stringify(body))
  return {
    status: head.then((h) => h.status),
    requestId: head.then((h) => h.requestId),
    events,
    ended,
    until: async (match, timeoutMs) => await new Promise((resolve, reject) => {
      const check = (): void => {
        const found = events.find(match)
        if (found !== undefined) { done(); resolve(found) } else if (finished) { done(); reject(new Error(`event stream ended: ${JSON.stringify(events).slice(0, 300)}`)) }
      }
      const timer = setTimeout(() => { done(); reject(new Error('timed out waiting for an event')) }, timeoutMs)
      const done = (): void => { clearTimeout(timer); wake.delete(check) }
      wake.add(check)
      check()
    })
  }
}

const nginxBin = findExecutable('nginx')
const natsBin = findExecutable('nats-server')

t.test('three gateways, two workers, a 3-node NATS cluster and nginx: exactly once, everywhere, through failures', async (t) => {
  if (nginxBin === undefined || natsBin === undefined) {
    t.fail('nginx and nats-server are needed: apt-get install nginx nats-server; .ci/run installs them when they are missing')
    return
  }
  const cluster = await startNatsCluster(3, natsBin)
  t.teardown(() => cluster.close())
  t.teardown(() => { agent.destroy() })
  const db = await createTestDatabase(t)
  // "slow ..." streams STREAM_TOKENS tokens TOKEN_MS apart; everything else answers at once.
  const runs = new Map<string, number>()
  const model: FakeModel = await startFakeModel(t, async (call) => {
    const text = lastUser(call)
    runs.set(text, (runs.get(text) ?? 0) + 1)
    sseHead(call.res)
    if (text.startsWith('slow')) {
      for (let i = 0; i < STREAM_TOKENS; i++) {
        sseDelta(call.res, `t${i} `)
        await new Promise((resolve) => setTimeout(resolve, TOKEN_MS))
      }
    } else {
      sseDelta(call.res, `re: ${text}`)
    }
    sseEnd(call.res)
  })

  const workers = [0, 1].map((i) => track(t, `worker-${i}`, spawnBuilt('src/llm-worker/main.ts', {
    MQTT_URL: urlsFrom(cluster, i), LLM_BASE_URL: model.url, LLM_MODEL: 'test-model', WORKER_ID: `cw-${i}`,
    // The default interval: on this 2-core machine, with every process of the cluster on it, a
    // shorter one has a busy worker's heartbeats late by 3 intervals and its chats worker_lost.
    WORKER_HEARTBEAT_MS: '1000', WORKER_SHARED_GROUP: '', MQTT_SUBSCRIBE_QOS: '0', WORKER_CONCURRENCY: '128', WORKER_QUEUE: '256', LOG_LEVEL: 'info'
  })))
  const dataDirs = [0, 1, 2].map(() => { const d = mkdtempSync(join(tmpdir(), 'tether-cluster-')); chmodSync(d, 0o755); return d })
  t.teardown(() => { for (const d of dataDirs) rmSync(d, { recursive: true, force: true }) })
  const gateways: Proc[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    gateways.push(track(t, `gw-${i}`, spawnBuilt('src/main.ts', {
      PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', INSTANCE_ID: `cg-${i}`,
      MQTT_URL: urlsFrom(cluster, i % 3), DATABASE_URL: db.url, DATA_DIR: dataDirs[i] as string, AUTH_SECRET: SECRET,
      THREADS: '1', MQTT_SUBSCRIBE_QOS: '0', PASSWORD_HASH_COST: '12', TRUST_PROXY: '127.0.0.1', LOGIN_MAX_FAILURES: String(LOGIN_MAX_FAILURES),
      MAX_PENDING: '10000', MAX_PENDING_PER_SESSION: '1000', MAX_PENDING_PER_USER: '10000', WS_MAX_PER_USER: '10000',
      CLUSTER_HEARTBEAT_MS: '500', CHAT_TIMEOUT_MS: '30000', SESSION_CREATE_PER_MINUTE: '100000'
    }), port))
  }
  for (const gw of gateways) {
    await waitFor(async () => (await request(gw.port, 'GET', '/readyz').catch(() => null))?.status === 200, { timeoutMs: 90_000, what: `${gw.name} ready; it said: ${gw.log().slice(-1500)}` })
  }
  for (const gw of gateways) {
    await waitFor(async () => {
      const [workersSeen, peers] = await Promise.all([request(gw.port, 'GET', '/api/health/workers'), request(gw.port, 'GET', '/api/health/cluster')])
      return workersSeen.json.workers.filter((w: any) => w.state === 'online').length === 2 && peers.json.instances.length === 3
    }, { timeoutMs: 60_000, what: `${gw.name} sees both workers and all three gateways` })
  }
  const nginx = await startNginx(t, nginxBin, { upstream: gateways.map((g) => `127.0.0.1:${g.port}`), chatReadTimeoutS: 60 })
  const via = nginx.port

  t.equal((await request(via, 'POST', '/api/auth/register', { username: 'cluster', password: 'correct horse battery' })).status, 201)
  const login = await request(via, 'POST', '/api/auth/login', { username: 'cluster', password: 'correct horse battery' })
  const token = login.json.token as string
  const auth = { authorization: `Bearer ${token}` }
  const sessions: string[] = []
  for (let i = 0; i < 16; i++) sessions.push((await request(via, 'POST', '/api/chatbot/sessions', { title: `s${i}` }, auth)).json.id)

  await t.test(`${CHATS} chats through nginx at c=${CONCURRENCY}: each answered once, each run once`, async (t) => {
    const answers: HttpAnswer[] = []
    let next = 0
    const began = performance.now()
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < CHATS) {
        const n = next++
        answers[n] = await post(via, '/api/chatbot/messages', { session_id: sessions[n % sessions.length], content: `chat ${n}` }, token)
      }
    }))
    const seconds = (performance.now() - began) / 1000
    t.comment(`${CHATS} chats in ${seconds.toFixed(1)} s (${Math.round(CHATS / seconds)}/s) through nginx and three gateways`)
    const bad = answers.filter((a) => a.status !== 200)
    t.equal(bad.length, 0, bad.slice(0, 3).map((a) => `${a.status} ${a.text}`).join(' | '))
    const wrong = answers.map((a, n) => ({ a, n })).filter(({ a, n }) => a.json?.reply?.content !== `re: chat ${n}`)
    t.equal(wrong.length, 0, `each answer is its own chat's ${wrong.slice(0, 2).map(({ a, n }) => `${n}: ${a.text}`).join(' | ')}`)
    const twice = [...runs].filter(([text, count]) => text.startsWith('chat ') && count !== 1)
    t.equal(twice.length, 0, `every request ran once on a worker ${twice.slice(0, 3).join(' ')}`)
    t.equal([...runs.keys()].filter((k) => k.startsWith('chat ')).length, CHATS, 'and every one ran')
    const perGateway = await Promise.all(gateways.map(async (g) => await metric(g.port, 'tether_chat_requests_total')))
    t.ok(perGateway.every((n) => n > 0), `all three gateways took chats (${perGateway.join(' / ')})`)
  })

  await t.test('a hint published once on the third node reaches every socket of its session on all three gateways once', async (t) => {
    const sessionId = sessions[0] as string
    const sockets: TestSocket[] = []
    for (const gw of gateways) {
      for (let k = 0; k < 2; k++) sockets.push(await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${token}`)))
    }
    // And through nginx, wherever it puts them.
    for (let k = 0; k < 3; k++) sockets.push(await connect(t, wsUrl(via, `/api/mqtt/ws/hints/${sessionId}?token=${token}`)))
    const peer = await mqttPeer(t, cluster.nodes[2]?.url as string)
    await untilHintsFlow(peer, sessionId, sockets, 20_000)
    await peer.publish(`llm/hints/${sessionId}`, JSON.stringify({ hint: 'once' }))
    await Promise.all(sockets.map(async (s) => await s.next('the hint', (f) => f?.type === 'hint' && f.data?.hint === 'once', 10_000)))
    await new Promise((resolve) => setTimeout(resolve, 1000))
    t.ok(sockets.every((s) => s.frames.filter((f) => f?.type === 'hint' && f.data?.hint === 'once').length === 1), `each of ${sockets.length} sockets on three gateways got it exactly once`)
  })

  await t.test(`one gateway SIGKILLed with ${STREAMS} WebSocket and ${SSE_STREAMS} event streams: each resumes through nginx and ends whole or stream_interrupted within 2 s`, async (t) => {
    const victim = gateways[0] as Proc
    const streams = await Promise.all(Array.from({ length: STREAMS }, async (_, i) => {
      const ws = await connect(t, wsUrl(victim.port, `/api/chatbot/ws?token=${token}`))
      ws.send({ type: 'chat', id: `s${i}`, session_id: sessions[i % sessions.length], content: `slow ${i}` })
      const start = await ws.next('start', (f) => f.type === 'start', 20_000)
      return { ws, requestId: start.request_id as string, i }
    }))
    await Promise.all(streams.map(async (s) => await s.ws.next('a first chunk', (f) => f.type === 'chunk', 20_000)))
    // And event streams on the same gateway, resumed through nginx with Last-Event-ID.
    const events = Array.from({ length: SSE_STREAMS }, (_, i) => sse(victim.port, 'POST', '/api/chatbot/messages', token, { session_id: sessions[i % sessions.length], content: `slow sse ${i}` }))
    await Promise.all(events.map(async (e) => await e.until((ev) => ev.event === 'chunk', 20_000)))
    victim.child.kill('SIGKILL')
    await Promise.all(events.map(async (e) => await e.ended))
    await Promise.all(streams.map(async (s) => await s.ws.closed))

    const results = await Promise.all(streams.map(async (s) => {
      const seen = s.ws.frames.filter((f) => f.type === 'chunk').map((f) => f.seq as number)
      const afterSeq = seen.length === 0 ? 0 : Math.max(...seen)
      const again = await connect(t, wsUrl(via, `/api/chatbot/ws?token=${token}`))
      const askedAt = performance.now()
      again.send({ type: 'resume', id: 'r', request_id: s.requestId, after_seq: afterSeq })
      const first = await again.next('the resumed stream', (f) => f.type === 'chunk' || f.type === 'done' || f.type === 'error', 10_000)
      const firstMs = performance.now() - askedAt
      const end = first.type === 'chunk' ? await again.next('its end', (f) => f.type === 'done' || f.type === 'error', 20_000) : first
      const seqs = again.frames.filter((f) => f.type === 'chunk').map((f) => f.seq as number)
      await again.close()
      return { s, afterSeq, firstMs, end, seqs }
    }))
    const whole = results.filter((r) => r.end.type === 'done')
    const interrupted = results.filter((r) => r.end.type === 'error' && r.end.error === 'stream_interrupted')
    t.equal(whole.length + interrupted.length, STREAMS, `every stream ended whole (${whole.length}) or stream_interrupted (${interrupted.length}): ${results.filter((r) => r.end.type === 'error' && r.end.error !== 'stream_interrupted').map((r) => r.end.error).join(',')}`)
    const expected = Array.from({ length: STREAM_TOKENS }, (_, i) => `t${i} `).join('')
    t.ok(whole.every((r) => r.end.content === expected), 'a whole answer is the whole answer')
    t.ok(whole.every((r) => r.seqs.every((seq, k) => seq === r.afterSeq + k + 1)), 'the chunks after after_seq, no gap and no repeat')
    const slowest = Math.max(...results.map((r) => r.firstMs))
    t.ok(slowest < 2500, `each one heard within 2 s of reconnecting (slowest ${Math.round(slowest)} ms)`)
    t.comment(`after the SIGKILL: ${whole.length} streams resumed whole, ${interrupted.length} interrupted; slowest first frame ${Math.round(slowest)} ms`)
    const sseResults = await Promise.all(events.map(async (e) => {
      const requestId = await e.requestId
      const ids = e.events.filter((ev) => ev.event === 'chunk').map((ev) => Number(ev.id))
      const last = Math.max(0, ...ids)
      const resumed = sse(via, 'GET', `/api/chatbot/streams/${requestId}`, token, undefined, String(last))
      await resumed.ended
      return { status: await resumed.status, last, resumed }
    }))
    t.ok(sseResults.every((r) => r.status === 200 || r.status === 503), `every event stream resumed through nginx: 200 or 503 (${sseResults.map((r) => r.status).join(',')})`)
    const sseWhole = sseResults.filter((r) => r.resumed.events.some((ev) => ev.event === 'done'))
    t.ok(sseWhole.every((r) => r.resumed.events.filter((ev) => ev.event === 'chunk').map((ev) => Number(ev.id)).every((id, k) => id === r.last + k + 1)), 'each resumed after its Last-Event-ID, no gap and no repeat')
    t.ok(sseWhole.every((r) => r.resumed.events.find((ev) => ev.event === 'done')?.data.content === expected), 'and ended with the whole answer')
    t.comment(`event streams resumed through nginx: ${sseWhole.length} of ${SSE_STREAMS} whole, the rest stream_interrupted`)
    for (const gw of gateways.slice(1)) {
      await waitFor(async () => await metric(gw.port, 'tether_chat_pending_requests') === 0, { timeoutMs: 20_000, what: `${gw.name} with nothing in flight` })
      await waitFor(async () => (await request(gw.port, 'GET', '/api/health/workers')).json.workers.every((w: any) => w.in_flight === 0), { timeoutMs: 20_000, what: `the workers idle as ${gw.name} sees them` })
    }
  })

  await t.test('one NATS node SIGKILLed: the processes on it reconnect to another node and chats go on', async (t) => {
    const live = gateways.slice(1)
    const onNode = async (): Promise<string[]> => (await Promise.all(live.map(async (g) => (await request(g.port, 'GET', '/api/health/mqtt')).json.broker as string)))
    // The node a live gateway is on: that gateway must move.
    const first = (await onNode())[0] ?? ''
    const node = cluster.nodes.find((n) => first.includes(`:${n.port}`)) ?? cluster.nodes[1] as NatsCluster['nodes'][number]
    t.comment(`before: the live gateways are on ${(await onNode()).join(', ')}; node ${node.url} is killed`)
    const began = performance.now()
    await node.kill()
    // Each live gateway's link settled on a node that is up; then presence has 3 heartbeat
    // intervals to notice a worker that was on the lost node (its last will went with the node);
    // then both workers online again and chats answered on each: what "chats resume" means.
    await waitFor(async () => {
      const [mqttStates, brokers] = await Promise.all([Promise.all(live.map(async (g) => (await request(g.port, 'GET', '/api/health/mqtt')).json.state as string)), onNode()])
      return mqttStates.every((s) => s === 'connected') && !brokers.some((b) => b.includes(`:${node.port}`))
    }, { timeoutMs: 30_000, intervalMs: 100, what: 'the live gateways\' links on live nodes' })
    t.comment(`links on ${(await onNode()).join(', ')} ${Math.round(performance.now() - began)} ms after the node was killed`)
    await new Promise((resolve) => setTimeout(resolve, 3500))
    await waitFor(async () => {
      const seen = await Promise.all(live.map(async (g) => (await request(g.port, 'GET', '/api/health/workers')).json.workers.filter((w: any) => w.state === 'online').length))
      if (!seen.every((n) => n === 2)) return false
      const answers = await Promise.all(live.map(async (g) => await post(g.port, '/api/chatbot/messages', { session_id: sessions[1], content: `after node loss ${Math.random()}` }, token)))
      return answers.every((a) => a.status === 200)
    }, { timeoutMs: 45_000, intervalMs: 250, what: `chats answered on every live gateway after the node loss; ${live.map((g) => `${g.name} said: ${g.log().slice(-3000)}`).join('\n')}` })
    t.comment(`both workers online and chats answered on both live gateways ${Math.round(performance.now() - began)} ms after the node was killed`)
    const answers = await Promise.all(Array.from({ length: 50 }, async (_, n) => await post(via, '/api/chatbot/messages', { session_id: sessions[n % sessions.length], content: `post-loss ${n}` }, token)))
    const failed = answers.filter((a) => a.status !== 200)
    t.equal(failed.length, 0, `fifty more chats through nginx all answered ${failed.slice(0, 3).map((a) => `${a.status} ${a.text}`).join(' | ')}`)
    for (const w of workers) t.notOk(w.child.exitCode !== null, `${w.name} still running`)
  })

  await t.test(`failed logins spread over the gateways trip the limit after ${LOGIN_MAX_FAILURES}, as on one`, async (t) => {
    const live = gateways.slice(1)
    const statuses: number[] = []
    for (let i = 0; i < LOGIN_MAX_FAILURES + 1; i++) {
      const gw = live[i % live.length] as Proc
      statuses.push((await request(gw.port, 'POST', '/api/auth/login', { username: 'cluster', password: `wrong ${i}` }, { 'x-real-ip': '10.9.8.7' })).status)
    }
    t.same(statuses, [...Array(LOGIN_MAX_FAILURES).fill(401), 429], 'five refusals, then the limit, whichever gateway was asked')
  })
})
