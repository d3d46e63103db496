/**
 * A stand-in LLM worker for benchmarks: answers every chat request with "echo: <content>".
 *
 *   MQTT_URL=mqtt://127.0.0.1:1883 MQTT_TOPIC_PREFIX=llm npm run bench:echo-worker
 *
 * Env: MQTT_URL (default mqtt://127.0.0.1:1883), MQTT_TOPIC_PREFIX (default llm),
 * ECHO_CHUNKS=n (send n `chunk` messages before `done`, default 0),
 * ECHO_SILENT=1 or `--silent` (subscribe and never answer: requests stay pending),
 * ECHO_RECONNECT_MS (wait between reconnect attempts after the broker went, default 1000),
 * ECHO_HOLD_MS (wait this long before answering, default 0: chats stay in flight),
 * ECHO_ANNOUNCE=1 (contract v1.1: heartbeats on <prefix>/workers/<ECHO_ID> every
 * ECHO_HEARTBEAT_MS (1000) with capacity ECHO_CAPACITY (10000), a last will, requests on its own
 * topic acknowledged with `ack`, replies stamped with worker_id), ECHO_ID (default bench-echo-<hex>).
 * Prints "echo-worker ready" once the subscription is granted; exits on SIGTERM/SIGINT.
 */
import { connectNoDelay, endClient, subscribe } from './lib/mqtt-socket.js'

interface ChatRequest {
  readonly request_id: string
  readonly content: string
  readonly reply_to: string
}

function parseRequest (payload: Buffer): ChatRequest | undefined {
  let msg: unknown
  try { msg = JSON.parse(payload.toString('utf8')) } catch { return undefined }
  if (typeof msg !== 'object' || msg === null) return undefined
  const m = msg as Record<string, unknown>
  if (m.v !== 1 || typeof m.request_id !== 'string' || typeof m.reply_to !== 'string') return undefined
  // Never publish to a wildcard or an empty topic, whatever a request says.
  if (m.reply_to === '' || /[+#]/.test(m.reply_to)) return undefined
  return { request_id: m.request_id, content: typeof m.content === 'string' ? m.content : '', reply_to: m.reply_to }
}

/** `text` cut into `n` deltas whose concatenation is `text` (contract: chunks then the full text). */
function splitDeltas (text: string, n: number): string[] {
  const out: string[] = []
  const size = Math.ceil(text.length / n)
  for (let i = 0; i < n; i++) out.push(text.slice(i * size, (i + 1) * size))
  return out
}

async function main (): Promise<void> {
  const url = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883'
  const prefix = process.env.MQTT_TOPIC_PREFIX ?? 'llm'
  const silent = process.argv.includes('--silent') || process.env.ECHO_SILENT === '1'
  const chunks = Number(process.env.ECHO_CHUNKS ?? '0')
  if (!Number.isInteger(chunks) || chunks < 0 || chunks > 1000) {
    console.error(`echo-worker: ECHO_CHUNKS must be a whole number 0..1000, got "${process.env.ECHO_CHUNKS}"`)
    process.exit(78)
  }

  const reconnectPeriodMs = Number(process.env.ECHO_RECONNECT_MS ?? '1000')
  const holdMs = Number(process.env.ECHO_HOLD_MS ?? '0')
  const announce = process.env.ECHO_ANNOUNCE === '1'
  const workerId = process.env.ECHO_ID ?? `bench-echo-${process.pid}`
  const heartbeatMs = Number(process.env.ECHO_HEARTBEAT_MS ?? '1000')
  const capacity = Number(process.env.ECHO_CAPACITY ?? '10000')
  const presenceTopic = `${prefix}/workers/${workerId}`
  const directTopic = `${prefix}/chat/request/${workerId}`
  let holding = 0
  const beat = (status: 'online' | 'offline'): string => JSON.stringify({ v: 1, worker_id: workerId, status, capacity, in_flight: holding, heartbeat_ms: heartbeatMs })
  const client = await connectNoDelay({
    url,
    clientIdPrefix: silent ? 'bench-silent' : 'bench-echo',
    reconnect: true,
    reconnectPeriodMs,
    ...(announce ? { clientId: workerId, will: { topic: presenceTopic, payload: beat('offline') } } : {})
  })
  client.on('error', (err) => { console.error(`echo-worker: ${err.message}`) })
  let received = 0
  let answered = 0
  let malformed = 0

  const stamp = announce ? { worker_id: workerId } : {}
  const answer = (req: ChatRequest): void => {
    const content = `echo: ${req.content}`
    if (chunks > 0) {
      for (const delta of splitDeltas(content, chunks)) {
        client.publish(req.reply_to, JSON.stringify({ v: 1, request_id: req.request_id, type: 'chunk', delta, ...stamp }), { qos: 1 })
      }
    }
    client.publish(req.reply_to, JSON.stringify({ v: 1, request_id: req.request_id, type: 'done', content, ...stamp }), { qos: 1 })
    answered++
  }
  client.on('message', (topic, payload) => {
    if (topic !== directTopic && topic !== `${prefix}/chat/request`) return
    received++
    if (silent) return
    const req = parseRequest(payload)
    if (req === undefined) { malformed++; return }
    if (announce && topic === directTopic) client.publish(req.reply_to, JSON.stringify({ v: 1, request_id: req.request_id, type: 'ack', worker_id: workerId }), { qos: 0 })
    if (holdMs <= 0) { answer(req); return }
    holding++
    setTimeout(() => { holding--; answer(req) }, holdMs)
  })

  const topic = `${prefix}/chat/request`
  await subscribe(client, topic, 1)
  if (announce) {
    await subscribe(client, directTopic, 1)
    const sendBeat = (): void => { client.publish(presenceTopic, beat('online'), { qos: 1 }) }
    // At once on every (re)connect, then every interval.
    client.on('connect', sendBeat)
    sendBeat()
    setInterval(sendBeat, heartbeatMs).unref()
  }
  console.log(`echo-worker ready (${silent ? 'silent' : `echo, ${chunks} chunks`}) on ${url} ${topic}`)

  let stopping = false
  const shutdown = (): void => {
    if (stopping) return
    stopping = true
    console.log(`echo-worker stopping: received ${received}, answered ${answered}, malformed ${malformed}`)
    void endClient(client).finally(() => process.exit(0))
  }
  process.on('SIGTERM', shutdown)
  process.on('SIGINT', shutdown)
}

main().catch((err: unknown) => {
  console.error(`echo-worker: ${(err as Error).message}`)
  process.exit(1)
})
