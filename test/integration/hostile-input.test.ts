/**
 * Input crafted to kill the process, sent the ways a peer can send it: one deeply nested frame
 * on a user's own hints or chat socket, a deeply nested hint on MQTT (retained, so it comes
 * back on every subscribe), and a worker's reply holding a NUL. Each must be refused or
 * cleaned with a clear answer, and everything else — other sockets, chats in flight, the next
 * chat — must carry on. (Before: the 5,000-deep state frame ended the process every time.)
 */
import t, { type Test } from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { done, echo, startScriptedWorker, type ChatRequest } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, mqttPeer, untilHintsFlow, wsUrl } from '../fixtures/ws-client.js'
import { deep, HOSTILE } from '../fixtures/hostile-json.js'


const broker = await startTestBroker()
t.teardown(() => broker.close())
const gw = await startGateway(t, { MQTT_URL: broker.url, HINT_MAX_BYTES: String(1024 * 1024) })
const worker = await startScriptedWorker({
  url: broker.url,
  behaviour: (request: ChatRequest) => request.content === 'nul please' ? [done(request, 'before\u0000after')] : echo(request)
})
t.teardown(() => worker.stop())
await waitFor(() => gw.tether.link.isUp, { what: 'the MQTT link up' })
const peer = await mqttPeer(t, broker.url)

async function stillServing (t: Test, what: string): Promise<void> {
  t.equal((await gw.request('GET', '/livez')).status, 200, `${what}: the process answers`)
  const chat = await gw.chat('after', 'still there?')
  t.equal(chat.status, 200, `${what}: a chat still works`)
}

t.test('a 5,000-deep state frame on one\'s own hints socket is an error frame; the socket, others and chats carry on', async (t) => {
  const sessionId = await gw.sessionId('deep-state')
  const victim = await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
  const bystander = await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
  await untilHintsFlow(peer, sessionId, [victim, bystander])
  const rejected = await gw.metric('tether_ws_frames_rejected_total', { endpoint: 'hints', reason: 'too_deep' })
  victim.send(`{"type":"state","data":${deep(5000)}}`)
  const error = await victim.next('the error frame', (f) => f?.type === 'error')
  t.equal(error.error, 'too_deep')
  t.match(error.message, /deeper than 64/)
  t.equal(await gw.metric('tether_ws_frames_rejected_total', { endpoint: 'hints', reason: 'too_deep' }), rejected + 1, 'counted')
  await peer.publish(`llm/hints/${sessionId}`, JSON.stringify({ after: true }))
  for (const s of [victim, bystander]) await s.next('a hint after the attack', (f) => f?.type === 'hint' && f.data?.after === true)
  t.notOk(victim.isClosed || bystander.isClosed, 'both sockets still open')
  await stillServing(t, 'after the deep state frame')
})

t.test('a 5,000-deep chat frame is an error frame and the chat socket keeps serving', async (t) => {
  const socket = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
  socket.send(`{"type":"chat","id":"x","session_id":"s","content":"hi","extra":${deep(5000)}}`)
  const error = await socket.next('the error frame', (f) => f?.type === 'error')
  t.equal(error.error, 'invalid_request')
  t.match(error.message, /deeper than 64/)
  socket.send({ type: 'chat', id: 'c1', session_id: await gw.sessionId('deep-chat'), content: 'hello' })
  const answer = await socket.next('done', (f) => f?.id === 'c1' && f.type === 'done')
  t.equal(answer.content, 'echo: hello')
})

t.test('a 100,000-deep hint on MQTT is dropped and counted, even retained and replayed on every subscribe', async (t) => {
  const sessionId = await gw.sessionId('deep-hint')
  const dropped = await gw.metric('tether_ws_hints_dropped_total', { reason: 'too_deep' })
  // Retained: the broker hands it to every new subscription of the topic.
  await peer.client.publishAsync(`llm/hints/${sessionId}`, deep(100_000), { qos: 1, retain: true })
  t.teardown(async () => { await peer.client.publishAsync(`llm/hints/${sessionId}`, '', { qos: 1, retain: true }) })
  for (let round = 1; round <= 2; round++) {
    const socket = await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
    await waitFor(async () => await gw.metric('tether_ws_hints_dropped_total', { reason: 'too_deep' }) >= dropped + round, { what: `the retained hint dropped on subscribe ${round}` })
    await peer.publish(`llm/hints/${sessionId}`, JSON.stringify({ fine: round }))
    await socket.next('the next good hint', (f) => f?.type === 'hint' && f.data?.fine === round)
    t.notOk(socket.frames.some((f) => f?.type === 'hint' && Array.isArray(f.data)), 'the poisonous hint never reached the socket')
    await socket.close()
  }
  await stillServing(t, 'after the deep hint')
})

t.test('a worker reply holding a NUL is stored and answered without it, not a 500', async (t) => {
  const answer = await gw.chat('nul', 'nul please')
  t.equal(answer.status, 200, answer.text)
  t.equal(answer.json.reply.content, 'beforeafter')
  const history = await gw.request('GET', `/api/chatbot/sessions/${await gw.sessionId('nul')}/messages`)
  t.same(history.json.map((m: { content: string }) => m.content), ['nul please', 'beforeafter'])
})

t.test('every hostile input of the fuzz list, through both sockets and both MQTT topics a peer can write, leaves the gateway serving', async (t) => {
  const sessionId = await gw.sessionId('fuzz')
  const hints = await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${sessionId}?token=${gw.token}`))
  const chat = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
  const replyTo = `llm/chat/reply/${gw.tether.link.clientId}`
  for (const text of HOSTILE) {
    // Frames over WS_MAX_PAYLOAD_BYTES close the socket by design (1009): those go by MQTT only.
    if (Buffer.byteLength(text) <= 16_384) {
      hints.send(text)
      chat.send(text)
    }
    await peer.client.publishAsync(`llm/hints/${sessionId}`, text, { qos: 1 })
    await peer.client.publishAsync(replyTo, text, { qos: 1 })
  }
  t.equal(await gw.metric('tether_handler_errors_total', { handler: 'ws_message' }), 0, 'no handler threw')
  t.equal(await gw.metric('tether_handler_errors_total', { handler: 'mqtt_message' }), 0)
  t.notOk(hints.isClosed, `the hints socket is open (${hints.closeInfo})`)
  t.notOk(chat.isClosed, `the chat socket is open (${chat.closeInfo})`)
  await stillServing(t, 'after the whole list')
})

