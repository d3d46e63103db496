/**
 * What Prometheus scrapes from a running gateway: the live /metrics text after real traffic
 * must pass `promtool check metrics`, and its series must not grow with sessions (no session,
 * user or request id is ever a label, docs/metrics.md).
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { PROMTOOL_MISSING, described, promtool, promtoolPath } from '../fixtures/promtool.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i
const INSTANCE_ID = 'tether-exposition-test'

async function setup (t: Test): Promise<Gateway> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  const gw = await startGateway(t, { MQTT_URL: broker.url, INSTANCE_ID })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'link connected' })
  return gw
}

async function scrape (gw: Gateway): Promise<string> {
  const answer = await gw.request('GET', '/metrics', undefined, { anonymous: true })
  if (answer.status !== 200) throw new Error(`GET /metrics: ${answer.status} ${answer.text}`)
  return answer.text
}

/** The exposition cut to the tether_ families (their HELP, TYPE and samples). */
function tetherFamilies (text: string): string {
  return text.split('\n')
    .filter((line) => /^(# (HELP|TYPE) )?tether_/.test(line))
    .join('\n') + '\n'
}

interface Series {
  /** The whole series identity: name plus its label set, as exposed. */
  key: string
  name: string
  labels: Array<[string, string]>
}

/** Every sample line of a text exposition (comments and blank lines skipped). */
function parseSeries (text: string): Series[] {
  const out: Series[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+\S+(\s+\d+)?$/.exec(line)
    if (match === null) throw new Error(`unparseable exposition line: ${line}`)
    const name = match[1] as string
    const labelText = match[2] ?? ''
    const labels = [...labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)]
      .map((m) => [m[1] as string, m[2] as string] as [string, string])
    out.push({ key: `${name}${labelText}`, name, labels })
  }
  return out
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T, R> (items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i] as T)
    }
  })
  await Promise.all(lanes)
  return results
}

async function createSession (gw: Gateway, title: string): Promise<string> {
  const a = await gw.request('POST', '/api/chatbot/sessions', JSON.stringify({ title }))
  if (a.status !== 201) throw new Error(`create session ${title}: ${a.status} ${a.text}`)
  return a.json.id as string
}

async function chat (gw: Gateway, sessionId: string, content: string): Promise<void> {
  const a = await gw.request('POST', '/api/chatbot/messages', JSON.stringify({ session_id: sessionId, content }),
    { headers: { 'content-type': 'application/json' } })
  if (a.status !== 200) throw new Error(`chat on ${sessionId}: ${a.status} ${a.text}`)
}

/** Opens a hints socket on the session and closes it again (both ends seen). */
async function hintsSocketRoundTrip (gw: Gateway, sessionId: string): Promise<void> {
  const socket = new WebSocket(`ws://127.0.0.1:${gw.port}/api/mqtt/ws/hints/${sessionId}?token=${encodeURIComponent(gw.token)}`)
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('error', reject)
    socket.once('unexpected-response', (_req, res) => reject(new Error(`hints upgrade refused: ${res.statusCode ?? '?'}`)))
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.close(1000)
  await closed
}

/** Some of everything: chats, a listing, refusals (400, 401, 404), a socket, health. */
async function driveTraffic (gw: Gateway, tag: string): Promise<string[]> {
  const ids = await pool(Array.from({ length: 4 }, (_, i) => `${tag}-${i}`), 4, (title) => createSession(gw, title))
  await pool(ids.slice(0, 3), 3, (id) => chat(gw, id, 'hello there'))
  await gw.request('GET', '/api/chatbot/sessions')
  await gw.request('GET', `/api/chatbot/sessions/${ids[0] as string}/messages`)
  await gw.request('POST', '/api/chatbot/messages', '{"session_id":', { headers: { 'content-type': 'application/json' } })
  await gw.request('GET', '/api/auth/me', undefined, { anonymous: true })
  await gw.request('GET', '/no/such/route')
  await gw.request('GET', '/api/health')
  await gw.request('GET', '/readyz')
  await hintsSocketRoundTrip(gw, ids[3] as string)
  await scrape(gw)
  return ids
}

t.test('the live /metrics after real traffic passes promtool check metrics', async (t) => {
  const gw = await setup(t)
  await driveTraffic(gw, 'lint')
  const answer = await gw.request('GET', '/metrics', undefined, { anonymous: true })
  t.equal(answer.status, 200)
  t.match(String(answer.headers['content-type']), /^text\/plain; version=0\.0\.4/, 'Prometheus text format 0.0.4')
  for (const name of ['tether_chat_requests_total', 'tether_chat_request_duration_seconds_bucket', 'tether_http_responses_total', 'tether_ws_opened_total', 'process_start_time_seconds']) {
    t.match(answer.text, new RegExp(`^${name}[{ ]`, 'm'), `${name} is exposed`)
  }
  if (promtoolPath() === undefined) {
    t.fail(PROMTOOL_MISSING)
    return
  }
  // promtool check metrics exits 1 when the text does not parse and 3 when it only has lint
  // findings. The whole exposition must be spotless, prom-client's defaults included (its three
  // gauges named *_total are dropped in src/metrics.ts; their labelled forms remain).
  const ours = await promtool(['check', 'metrics'], tetherFamilies(answer.text))
  t.equal(ours.code, 0, described('promtool check metrics passes the tether_ families', ours))
  t.equal((ours.stdout + ours.stderr).trim(), '', 'no lint findings on tether_ families')
  const all = await promtool(['check', 'metrics'], answer.text)
  t.equal(all.code, 0, described('promtool check metrics passes the whole exposition', all))
  t.equal((all.stdout + all.stderr).trim(), '', 'no lint findings at all')
  t.match(answer.text, /^nodejs_active_handles\{type="/m, 'the handle counts by type are still there')
  t.notMatch(answer.text, /^nodejs_active_handles_total /m, 'their *_total gauge is not')
})

t.test('series do not grow with sessions: 1,000 sessions add no series and no id is a label value', async (t) => {
  const gw = await setup(t)
  // Warm-up: every route, status, outcome and socket reason the big run will produce.
  const warmIds = await driveTraffic(gw, 'warm')
  const before = parseSeries(await scrape(gw))

  const titles = Array.from({ length: 1000 }, (_, i) => `bulk-${i}`)
  const ids = await pool(titles, 16, (title) => createSession(gw, title))
  t.equal(new Set(ids).size, 1000, '1,000 distinct sessions created')
  await pool(ids.filter((_, i) => i % 10 === 0), 8, (id) => chat(gw, id, 'counting series'))
  await pool(ids.slice(0, 20), 4, (id) => hintsSocketRoundTrip(gw, id))
  await gw.request('GET', '/api/chatbot/sessions')
  await pool(ids.slice(0, 50), 8, (id) => gw.request('GET', `/api/chatbot/sessions/${id}/messages`))
  await waitFor(async () => await gw.metric('tether_ws_connections', { endpoint: 'hints' }) === 0, { timeoutMs: 5000, what: 'hints sockets closed' })
  const after = parseSeries(await scrape(gw))

  // prom-client's default process/nodejs metrics carry labels such as GC kind and handle
  // type, which come and go with what the process happens to be doing; they are bounded by
  // Node itself and are checked below only against ids and runaway growth.
  const ours = (list: Series[]): Set<string> => new Set(list.filter((s) => s.name.startsWith('tether_')).map((s) => s.key))
  const oursBefore = ours(before)
  const oursAfter = ours(after)
  const added = [...oursAfter].filter((k) => !oursBefore.has(k))
  t.ok(oursBefore.size > 50, `a realistic set of tether_ series to start from (${oursBefore.size})`)
  // A status a loaded machine may add (a 503 at the pool's acquire timeout, say) is a handful
  // of new series at most; a per-session label would be hundreds.
  t.ok(added.length <= 5, `tether_ series ${oursBefore.size} -> ${oursAfter.size} after 1,000 sessions; added: ${JSON.stringify(added)}`)
  const keysBefore = new Set(before.map((s) => s.key))
  const addedDefaults = [...new Set(after.filter((s) => !keysBefore.has(s.key)).map((s) => s.name))]
  t.ok(after.length - before.length < 50, `all series ${before.length} -> ${after.length}: no growth proportional to 1,000 sessions (new in: ${addedDefaults.join(', ')})`)

  const ids2 = new Set([...ids, ...warmIds, gw.userId])
  const offending = after.flatMap((s) => s.labels
    .filter(([, value]) => UUID_RE.test(value) || ids2.has(value) || value.includes(INSTANCE_ID))
    .map(([label, value]) => `${s.name} ${label}="${value}"`))
  t.same(offending, [], 'no label value is a UUID, a session or user id, or the instance id')
  const names = new Set(after.map((s) => s.name))
  t.same([...names].filter((n) => UUID_RE.test(n) || /\d{4,}/.test(n)), [], 'no id or port inside a metric name')
})
