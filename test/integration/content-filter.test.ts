import t, { type Test } from 'tap'
import { countTokens } from 'gpt-tokenizer/encoding/o200k_base'
import WebSocket from 'ws'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway, type Gateway, type HttpAnswer } from '../fixtures/gateway.js'
import { echo, startScriptedWorker, type ScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

/**
 * The first task of a kind on a thread loads its module under the TypeScript loader (and the
 * tokenizer's ranks, about 2 s here); nothing below tests the general task deadline.
 */
const SLOW_MACHINE = { THREAD_TASK_TIMEOUT_MS: '60000' }

interface Setup { gw: Gateway, worker: ScriptedWorker }

async function setup (t: Test, env: Record<string, string>): Promise<Setup> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  const gw = await startGateway(t, { ...SLOW_MACHINE, MQTT_URL: broker.url, ...env })
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 5000, what: 'link connected' })
  return { gw, worker }
}

async function storedMessages (gw: Gateway, key: string): Promise<Array<{ role: string, content: string }>> {
  const answer = await gw.request('GET', `/api/chatbot/sessions/${await gw.sessionId(key)}/messages`)
  if (answer.status !== 200) throw new Error(`messages: ${answer.status} ${answer.text}`)
  return answer.json.map((m: { role: string, content: string }) => ({ role: m.role, content: m.content }))
}

/** One chat over /api/chatbot/ws; resolves with the server's done or error frame. */
async function chatOverSocket (t: Test, gw: Gateway, key: string, content: string): Promise<any> {
  const sessionId = await gw.sessionId(key)
  const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/api/chatbot/ws?token=${gw.token}`, { perMessageDeflate: false })
  t.teardown(() => { ws.terminate() })
  const answer = new Promise<any>((resolve, reject) => {
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data))
      if (frame.type === 'done' || frame.type === 'error') resolve(frame)
    })
    ws.on('error', reject)
    ws.on('close', () => { reject(new Error('socket closed before an answer')) })
  })
  ws.once('open', () => { ws.send(JSON.stringify({ type: 'chat', id: 'c1', session_id: sessionId, content })) })
  return await answer
}

t.test('a message matching a filter is refused with 400 invalid_request, and is neither stored nor published', async (t) => {
  const { gw, worker } = await setup(t, {
    CONTENT_FILTERS: JSON.stringify(['secret\\s+plan', '/FORBIDDEN/i']),
    // Screening semantics here, not deadlines: room for the thread's first load.
    CONTENT_FILTER_TIMEOUT_MS: '10000'
  })
  const refused = await gw.chat('s1', 'this is forbidden talk')
  t.equal(refused.status, 400)
  t.equal(refused.json?.error, 'invalid_request')
  t.equal(refused.json?.message, 'Content rejected by a filter.')
  t.equal(refused.headers['x-request-id'], refused.json?.request_id)
  t.same(await storedMessages(gw, 's1'), [], 'nothing stored')

  const passed = await gw.chat('s1', 'a harmless question')
  t.equal(passed.status, 200, 'a message no filter matches goes through')
  t.same(await storedMessages(gw, 's1'), [
    { role: 'user', content: 'a harmless question' },
    { role: 'assistant', content: 'echo: a harmless question' }
  ])
  t.same(worker.received.map((r) => r.content), ['a harmless question'], 'only the harmless message was published')

  const overSocket = await chatOverSocket(t, gw, 's2', 'the secret   plan')
  t.match(overSocket, { type: 'error', id: 'c1', error: 'invalid_request', message: 'Content rejected by a filter.' }, 'the chat socket screens too')
  t.same(await storedMessages(gw, 's2'), [])
  t.equal(worker.received.length, 1, 'still nothing else published')
})

t.test('a catastrophic pattern answers 503 overloaded quickly instead of hanging, /livez answers meanwhile, and chats go on', async (t) => {
  const { gw, worker } = await setup(t, {
    CONTENT_FILTERS: JSON.stringify(['(a+)+$']),
    CONTENT_FILTER_TIMEOUT_MS: '1000',
    // The stuck thread is replaced; the other one serves the chat that follows meanwhile.
    THREADS: '2'
  })
  const settled: string[] = []
  // 2^40 backtracking steps: hours, were it not stopped.
  const stuck = gw.chat('evil', 'a'.repeat(40) + '!').then((a) => { settled.push('chat'); return a })
  const livez = gw.request('GET', '/livez').then((a) => { settled.push('livez'); return a })
  const [chat, live] = await Promise.all([stuck, livez])

  t.equal(live.status, 200, '/livez answered')
  t.same(settled, ['livez', 'chat'], '/livez answered while the message was being screened')
  t.equal(chat.status, 503)
  t.equal(chat.json?.error, 'overloaded')
  t.equal(chat.json?.message, 'Content screening timed out; retry later.')
  t.ok(Number(chat.headers['retry-after']) >= 1, `Retry-After ${String(chat.headers['retry-after'])}`)
  t.ok(chat.ms < 15_000, `answered in ${Math.round(chat.ms)} ms, at the screening deadline rather than never`)
  t.same(await storedMessages(gw, 'evil'), [], 'nothing stored')
  t.equal(worker.received.length, 0, 'nothing published')

  const next = await gw.chat('evil', 'hello')
  t.equal(next.status, 200, 'the next chat is screened and answered')
  t.equal(next.json?.reply?.content, 'echo: hello')
})

t.test('the history a worker receives is trimmed from the oldest turn to HISTORY_MAX_TOKENS', async (t) => {
  const BUDGET = 40
  const { gw, worker } = await setup(t, { HISTORY_MAX_TOKENS: String(BUDGET) })
  const turns = [
    'Tell me about the tides and why there are two of them each day.',
    'Привет! Расскажи, пожалуйста, о приливах и отливах.',
    'And what about spring tides?',
    'Thanks.'
  ]
  const answers: HttpAnswer[] = []
  for (const content of turns) answers.push(await gw.chat('tides', content))
  t.same(answers.map((a) => a.status), [200, 200, 200, 200])

  const stored = await storedMessages(gw, 'tides')
  const earlier = stored.slice(0, -2) // everything before the last chat's own message and reply
  const history = worker.received[3]?.history ?? []
  const tokens = (text: string): number => countTokens(text, { disallowedSpecial: new Set() })
  const used = history.reduce((sum, turn) => sum + tokens(turn.content), 0)
  const dropped = earlier.length - history.length

  t.ok(earlier.reduce((sum, turn) => sum + tokens(turn.content), 0) > BUDGET, 'the whole history would not fit')
  t.ok(earlier.reduce((sum, turn) => sum + turn.content.length, 0) < 16_000, 'the character budget alone would keep it all')
  t.ok(history.length > 0 && dropped > 0, `kept ${history.length} of ${earlier.length} turns`)
  t.same(history, earlier.slice(dropped), 'the newest turns, oldest first')
  t.ok(used <= BUDGET, `${used} tokens kept, within ${BUDGET}`)
  t.ok(used + tokens((earlier[dropped - 1] as { content: string }).content) > BUDGET, 'the next older turn would not have fit')
})
