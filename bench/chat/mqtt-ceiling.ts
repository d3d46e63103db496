/**
 * The raw MQTT ceiling: what the broker plus the echo worker can do with no gateway in the way.
 * One mqtt.js client publishes contract-shaped requests at QoS 1 to `<prefix>/chat/request`
 * with its own reply topic, keeping `concurrency` requests outstanding (closed loop), and times
 * publish-to-`done`. The gateway can at best match this, so results are reported as a ratio of it.
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { connectNoDelay, endClient, subscribe } from '../lib/mqtt-socket.js'
import { LatencyRecorder, loadResult, Tally, type LoadResult } from '../lib/stats.js'

export interface MqttLoadOptions {
  readonly url: string
  readonly prefix: string
  readonly concurrency: number
  readonly warmupS: number
  readonly measureS: number
  /** How long outstanding requests may finish after the window before they count as unfinished. */
  readonly drainMs: number
  readonly sessions: number
  /** Hard cap on requests sent, whatever the clock says. */
  readonly maxRequests: number
}

export async function runMqttCeiling (o: MqttLoadOptions): Promise<LoadResult> {
  const client = await connectNoDelay({ url: o.url, clientIdPrefix: 'bench-ceiling' })
  const run = randomBytes(4).toString('hex')
  const replyTo = `${o.prefix}/chat/reply/ceiling-${run}`
  const requestTopic = `${o.prefix}/chat/request`
  await subscribe(client, replyTo, 1)

  const outstanding = new Map<string, number>()
  const latencies = new LatencyRecorder()
  const statuses = new Tally()
  const errors = new Tally()
  let seq = 0
  const t0 = performance.now()
  const warmEnd = t0 + o.warmupS * 1000
  const measEnd = warmEnd + o.measureS * 1000
  let onDrained: (() => void) | undefined

  const fire = (): void => {
    const id = `${run}-${seq}`
    const session = `bench-${seq % o.sessions}`
    seq++
    outstanding.set(id, performance.now())
    const payload = JSON.stringify({
      v: 1, request_id: id, session_id: session, user_id: 'bench', content: 'hello', history: [], reply_to: replyTo, deadline: Date.now() + 30_000
    })
    client.publish(requestTopic, payload, { qos: 1 }, (err) => { if (err !== undefined && err !== null) errors.add('publish') })
  }

  client.on('message', (_topic, payload) => {
    const now = performance.now()
    let msg: { request_id?: unknown, type?: unknown, content?: unknown }
    try { msg = JSON.parse(payload.toString('utf8')) as typeof msg } catch { errors.add('malformed'); return }
    if (msg.type === 'chunk') return
    const id = typeof msg.request_id === 'string' ? msg.request_id : ''
    const started = outstanding.get(id)
    if (started === undefined) { errors.add('unknown_reply'); return }
    outstanding.delete(id)
    if (now >= warmEnd && now < measEnd) {
      latencies.add(now - started)
      if (msg.type === 'done') statuses.add(msg.content === 'echo: hello' ? 'ok' : 'bad_body')
      else statuses.add(String(msg.type))
    }
    if (now < measEnd && seq < o.maxRequests) fire()
    else if (outstanding.size === 0) onDrained?.()
  })

  for (let i = 0; i < o.concurrency; i++) fire()
  await new Promise((resolve) => setTimeout(resolve, measEnd - performance.now()))
  if (outstanding.size > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.drainMs)
      onDrained = () => { clearTimeout(timer); resolve() }
    })
  }
  const unfinished = outstanding.size
  await endClient(client)

  return loadResult('mqtt', o, { latencies, statuses, errors, unfinished })
}
