/**
 * Shutdown tells the LLM workers to stop (contract v1.1, cancel reasons): chats still in flight
 * when SHUTDOWN_GRACE_MS runs out get 503 and a cancel with reason `shutdown`; WebSocket chats,
 * whose sockets are closed at once with "reconnect", are cancelled as `client_gone`.
 */
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, wsUrl } from '../fixtures/ws-client.js'

t.test('a shutdown cancels what is still in flight on the worker, HTTP as shutdown, WebSocket as client_gone', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  // Never answers: every chat is still in flight when the gateway stops.
  const worker = await startScriptedWorker({ url: broker.url, behaviour: () => [] })
  t.teardown(() => worker.stop())
  const gw = await startGateway(t, { MQTT_URL: broker.url, SHUTDOWN_GRACE_MS: '200', CHAT_TIMEOUT_MS: '30000', THREAD_TASK_TIMEOUT_MS: '60000' })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  const socket = await connect(t, wsUrl(gw.port, `/api/chatbot/ws?token=${gw.token}`))
  socket.send({ type: 'chat', id: 'w', session_id: await gw.sessionId('ws'), content: 'hold' })
  const http = gw.chat('http', 'hold')
  await waitFor(() => worker.received.length === 2, { what: 'both chats at the worker' })
  const wsRequest = (await socket.next('start', (f) => f.type === 'start')).request_id as string
  const httpRequest = worker.received.map((r) => r.request_id).find((id) => id !== wsRequest) as string
  await gw.tether.stop()
  const answer = await http
  t.same([answer.status, answer.json.error], [503, 'shutting_down'])
  await waitFor(() => worker.cancels.length === 2, { what: 'two cancels at the worker' })
  t.same(Object.fromEntries(worker.cancels.map((c) => [c.request_id, c.reason])), { [wsRequest]: 'client_gone', [httpRequest]: 'shutdown' })
})
