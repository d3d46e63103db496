/**
 * No one account, or one address, can take what everyone shares: chat places, sessions,
 * sockets, the password-hashing threads. Each limit is a setting (docs/operations.md,
 * "Security"); each refusal is a clear 429 or 503 and is counted, and nobody else is touched.
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway } from '../fixtures/gateway.js'
import { echo, startScriptedWorker, type ChatRequest } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, refused, wsUrl } from '../fixtures/ws-client.js'
import { proxiedDatabase } from '../fixtures/database.js'

const broker = await startTestBroker()
t.teardown(() => broker.close())
// 'hold' is never answered: such a chat holds its place until its client goes.
const worker = await startScriptedWorker({ url: broker.url, behaviour: (r: ChatRequest) => r.content === 'hold' ? [] : echo(r) })
t.teardown(() => worker.stop())

async function gateway (env: Record<string, string>): Promise<Gateway> {
  const gw = await startGateway(t, { MQTT_URL: broker.url, ...env })
  await waitFor(() => gw.tether.link.isUp, { what: 'the MQTT link up' })
  return gw
}

const post = (gw: Gateway, token: string, sessionId: string, content: string): ReturnType<Gateway['request']> =>
  gw.request('POST', '/api/chatbot/messages', JSON.stringify({ session_id: sessionId, content }), { token })

t.test('one user cannot hold more than MAX_PENDING_PER_USER chats over all sessions; another user is unaffected', async (t) => {
  const gw = await gateway({ MAX_PENDING_PER_USER: '3', MAX_PENDING_PER_SESSION: '4' })
  const held = ['u1', 'u2', 'u3'].map((key) => gw.chatAbortable(key, 'hold'))
  t.teardown(() => { for (const h of held) h.abort() })
  await waitFor(() => gw.tether.pending.size === 3, { what: 'three chats in flight' })
  const fourth = await gw.chat('u4', 'one more')
  t.equal(fourth.status, 429)
  t.equal(fourth.json.error, 'too_many_requests')
  t.match(fourth.json.message, /your chats/)
  t.ok(Number(fourth.headers['retry-after']) >= 1, 'with Retry-After')
  t.equal(await gw.metric('tether_limits_refused_total', { limit: 'pending_user' }), 1, 'counted as pending_user')
  const other = await gw.newUser('other-user')
  const session = await gw.request('POST', '/api/chatbot/sessions', '{}', { token: other.token })
  t.equal((await post(gw, other.token, session.json.id, 'my turn')).status, 200, 'another user chats as usual')
  for (const h of held) h.abort()
  await waitFor(() => gw.tether.pending.size === 0, { what: 'the held chats cancelled' })
  t.equal((await gw.chat('u4', 'now')).status, 200, 'and the first user again, once their chats ended')
})

t.test('a stranger posting to someone else\'s session gets 404 and holds none of its places', async (t) => {
  const gw = await gateway({ MAX_PENDING_PER_SESSION: '2' })
  const sessionId = await gw.sessionId('owned')
  const stranger = await gw.newUser('stranger')
  // The stranger's chats would never be answered ('hold'): were they to take places first,
  // the owner's two chats below would meet the per-session cap.
  const attacks = Array.from({ length: 10 }, async () => await post(gw, stranger.token, sessionId, 'hold'))
  const mine = [gw.chat('owned', 'first'), gw.chat('owned', 'second')]
  const [attackAnswers, myAnswers] = await Promise.all([Promise.all(attacks), Promise.all(mine)])
  t.same(attackAnswers.map((a) => a.status), Array(10).fill(404), 'every stranger\'s chat: 404 session_not_found')
  t.same(myAnswers.map((a) => a.status), [200, 200], 'the owner\'s chats all went through')
  t.equal(gw.tether.pending.size, 0)
})

t.test('chats naming sessions nobody has seen are looked up within the user\'s share, not as many as the socket sends', async (t) => {
  const gw = await gateway({ MAX_PENDING_PER_USER: '2' })
  const socket = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
  // Sent in one go: every ownership lookup would start before the first returns.
  for (let i = 0; i < 20; i++) socket.send({ type: 'chat', id: `x${i}`, session_id: randomUUID(), content: 'hi' })
  const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => await socket.next(`answer to x${i}`, (f) => f?.id === `x${i}` && f.type !== 'start')))
  const codes = answers.map((a) => a.error as string)
  t.ok(codes.every((c) => c === 'session_not_found' || c === 'too_many_requests'), codes.join(' '))
  t.ok(codes.filter((c) => c === 'session_not_found').length <= 10, 'most never reached the database')
  t.ok(codes.includes('too_many_requests'), 'the rest were refused at once with the user\'s cap')
  t.equal(gw.tether.pending.size, 0)
})

t.test('hints-socket upgrades for sessions nobody has seen are looked up within the user\'s share too', async (t) => {
  // The database frozen behind a proxy: each lookup hangs, holding one of the user's places.
  const { proxy, url } = await proxiedDatabase(t)
  const gw = await gateway({ DATABASE_URL: url, MAX_PENDING_PER_USER: '2', DB_ACQUIRE_TIMEOUT_MS: '3000' })
  proxy.pause()
  t.teardown(() => { proxy.resume() })
  const attempts = Array.from({ length: 6 }, async () => await refused(wsUrl(gw.port, `/api/mqtt/ws/hints/${randomUUID()}?token=${gw.token}`), { timeoutMs: 20_000 }).then((r) => r.status, (err: Error) => err.message))
  // Four are refused at once with the user's cap while two lookups hang in the freeze.
  await waitFor(async () => await gw.metric('tether_limits_refused_total', { limit: 'pending_user' }) === 4, { what: 'four upgrades refused while two lookups hang' })
  proxy.resume()
  const statuses = await Promise.all(attempts)
  t.equal(statuses.filter((s) => s === 429).length, 4, `four refused with 429 (${statuses.join(' ')})`)
  t.equal(statuses.filter((s) => s === 404 || s === 503).length, 2, 'two looked up: unknown (404) or the database timed out (503)')
})

t.test('sessions per user are rate-limited by SESSION_CREATE_PER_MINUTE with Retry-After', async (t) => {
  const gw = await gateway({ SESSION_CREATE_PER_MINUTE: '3' })
  const statuses: number[] = []
  let last
  for (let i = 0; i < 5; i++) {
    last = await gw.request('POST', '/api/chatbot/sessions', JSON.stringify({ title: `s${i}` }))
    statuses.push(last.status)
  }
  t.same(statuses, [201, 201, 201, 429, 429])
  t.equal(last?.json.error, 'too_many_requests')
  t.ok(Number(last?.headers['retry-after']) >= 1, 'Retry-After says when')
  const other = await gw.newUser('fresh-user')
  t.equal((await gw.request('POST', '/api/chatbot/sessions', '{}', { token: other.token })).status, 201, 'another user is not limited')
  t.equal(await gw.metric('tether_limits_refused_total', { limit: 'session_create' }), 2)
})

t.test('sockets per user are capped by WS_MAX_PER_USER, both endpoints together, even opened all at once', async (t) => {
  const gw = await gateway({ WS_MAX_PER_USER: '3' })
  const sessionId = await gw.sessionId('sockets')
  const urls = [
    ...Array.from({ length: 4 }, () => wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`)),
    ...Array.from({ length: 4 }, () => wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
  ]
  const outcomes = await Promise.allSettled(urls.map(async (url) => await connect(t, url)))
  const open = outcomes.filter((o) => o.status === 'fulfilled')
  t.equal(open.length, 3, 'three of eight opened')
  const refusal = await refused(wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
  t.equal(refusal.status, 429, 'the next is refused before the upgrade with 429')
  const other = await gw.newUser('socket-user')
  await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${other.token}`))
  t.pass('another user still connects')
  const first = open[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof connect>>>
  await first.value.close()
  await waitFor(async () => { try { await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`)); return true } catch { return false } }, { what: 'a socket to open once one closed' })
})

t.test('registrations per address are rate-limited by REGISTER_PER_ADDRESS_PER_HOUR', async (t) => {
  const gw = await gateway({ REGISTER_PER_ADDRESS_PER_HOUR: '3' })
  // The fixture user already registered from this address: two more are allowed.
  const statuses: number[] = []
  let last
  for (let i = 0; i < 3; i++) {
    last = await gw.request('POST', '/api/auth/register', JSON.stringify({ username: `flood-${i}`, password: 'long enough password' }), { anonymous: true })
    statuses.push(last.status)
  }
  t.same(statuses, [201, 201, 429])
  t.equal(last?.json.error, 'rate_limited')
  t.ok(Number(last?.headers['retry-after']) >= 1)
  t.equal((await gw.request('POST', '/api/auth/login', JSON.stringify({ username: 'flood-0', password: 'long enough password' }), { anonymous: true })).status, 200, 'logins are not limited by it')
})

t.test('a registration flood does not starve logins: they keep their share of the hashing threads', async (t) => {
  // Real cost, one thread, a short queue, registrations' share at its default (twice the
  // threads): before the share, the flood filled the queue and every login in the window got
  // 503 overloaded.
  const gw = await gateway({ PASSWORD_HASH_COST: '14', THREADS: '1', THREAD_MAX_QUEUE: '4', REGISTER_PER_ADDRESS_PER_HOUR: '1000000', REGISTER_MAX_CONCURRENT: '0' })
  await gw.newUser('real-user', 'the real password')
  let flooding = true
  let n = 0
  const flood = Array.from({ length: 16 }, async () => {
    const statuses: number[] = []
    while (flooding && statuses.length < 200) {
      const a = await gw.request('POST', '/api/auth/register', JSON.stringify({ username: `junk-${n++}`, password: 'junk password!' }), { anonymous: true })
      statuses.push(a.status)
    }
    return statuses
  })
  const logins: number[] = []
  for (let i = 0; i < 8; i++) {
    const a = await gw.request('POST', '/api/auth/login', JSON.stringify({ username: 'real-user', password: 'the real password' }), { anonymous: true })
    logins.push(a.status)
  }
  flooding = false
  const floodStatuses = (await Promise.all(flood)).flat()
  t.same(logins, Array(8).fill(200), 'every login during the flood succeeded')
  t.ok(floodStatuses.includes(503), 'while registrations beyond their share were refused with 503')
  t.ok(await gw.metric('tether_limits_refused_total', { limit: 'register_share' }) > 0, 'and counted as register_share')
})

t.test('a login refused with 503 is not counted as a failed login', async (t) => {
  // One thread and one queue place: of a burst of logins, two are checked and the rest find
  // the pool full (503). Each attempt is charged up front; a 503 must be given back, or the
  // next burst meets 429 rate_limited although not one password was wrong.
  const gw = await gateway({ PASSWORD_HASH_COST: '16', THREADS: '1', THREAD_MAX_QUEUE: '1', LOGIN_MAX_FAILURES: '6' })
  await gw.newUser('busy-user', 'the real password')
  const login = async (): Promise<number> => (await gw.request('POST', '/api/auth/login', JSON.stringify({ username: 'busy-user', password: 'the real password' }), { anonymous: true })).status
  const first = await Promise.all(Array.from({ length: 6 }, login))
  t.ok(first.includes(503), `some of a burst of 6 found the pool full (${first.join(' ')})`)
  const second = await Promise.all(Array.from({ length: 6 }, login))
  t.notOk(second.includes(429), `the next burst is not rate-limited (${second.join(' ')})`)
  t.equal(await login(), 200, 'and a lone login succeeds')
})
