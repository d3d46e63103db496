/**
 * Streamed chat over `/api/chatbot/ws`, client side: M sockets, chats sent open-loop at a fixed
 * rate round-robin over sockets and sessions, each timed from send to its first `chunk` and to
 * its `done`. A chat completes only with `done` carrying `echo: <what was sent>` after exactly
 * the echo worker's number of chunks.
 */
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import type WebSocket from 'ws'
import { LatencyRecorder, Tally } from '../lib/stats.js'
import { openAll, closeAll, type OpenSpec } from './open.js'
import { paced } from './pace.js'
import type { ChatOptions, ChatResultMsg } from './protocol.js'

const PENDING = 0
const DONE = 1
const BAD = 2
const FAILED = 3

export async function runChatLoad (o: ChatOptions): Promise<ChatResultMsg> {
  const total = Math.max(1, Math.round(o.ratePerS * o.durationS))
  const sentAt = new Float64Array(total)
  const chunks = new Uint16Array(total)
  const state = new Uint8Array(total)
  const firstChunk = new LatencyRecorder()
  const doneMs = new LatencyRecorder()
  const errors = new Tally()
  const closes = new Tally()
  let finished = 0

  function settle (k: number, s: number): void {
    if (state[k] !== PENDING) return
    state[k] = s
    finished++
  }

  function onFrame (raw: WebSocket.RawData): void {
    const now = performance.now()
    let f: { type?: unknown, id?: unknown, delta?: unknown, content?: unknown, error?: unknown }
    try { f = JSON.parse(raw.toString()) } catch { errors.add('unparsable_frame'); return }
    const k = typeof f.id === 'string' && f.id.startsWith('c') ? Number(f.id.slice(1)) : NaN
    if (!Number.isInteger(k) || k < 0 || k >= total) { errors.add(`frame_${String(f.type)}_${String(f.error ?? 'no_id')}`); return }
    if (f.type === 'chunk') {
      if (chunks[k] === 0) firstChunk.add(now - (sentAt[k] ?? now))
      chunks[k] = (chunks[k] ?? 0) + 1
    } else if (f.type === 'done') {
      doneMs.add(now - (sentAt[k] ?? now))
      settle(k, f.content === `echo: hello ${k}` && chunks[k] === o.chunks ? DONE : BAD)
    } else if (f.type === 'error') {
      errors.add(String(f.error))
      settle(k, FAILED)
    }
  }

  const specs: OpenSpec[] = Array.from({ length: o.sockets }, () => ({
    url: `ws://127.0.0.1:${o.port}/api/chatbot/ws?token=${encodeURIComponent(o.token)}`,
    attach: (ws: WebSocket) => {
      ws.on('error', () => { /* counted through 'close' */ })
      ws.on('message', onFrame)
      ws.on('close', (code) => { closes.add(code) })
    }
  }))
  const opened = await openAll(specs, o.openConcurrency, o.openTimeoutMs)
  const live = opened.sockets.filter((ws): ws is WebSocket => ws !== undefined)
  if (live.length === 0) {
    return {
      type: 'chat-result', sockets_opened: 0, open_failed: opened.failed.counts, sent: 0, completed: 0, errors: {}, bad: 0, unfinished: 0,
      send_window_s: 0, first_chunk_ms: new Float64Array(0), done_ms: new Float64Array(0), elu: 0, closes: closes.counts
    }
  }

  const elu0 = performance.eventLoopUtilization()
  const pace = await paced({
    ratePerS: o.ratePerS,
    total,
    maxMs: o.durationS * 3000 + 5000,
    send: (k) => {
      const ws = live[k % live.length] as WebSocket
      const sessionId = o.sessionIds[k % o.sessionIds.length] as string
      sentAt[k] = performance.now()
      ws.send(`{"type":"chat","id":"c${k}","session_id":"${sessionId}","content":"hello ${k}"}`)
    }
  })
  const end = performance.now() + o.drainMs
  while (finished < pace.sent && performance.now() < end) await sleep(20)
  const elu = performance.eventLoopUtilization(elu0).utilization

  let completed = 0
  let bad = 0
  for (let k = 0; k < pace.sent; k++) {
    if (state[k] === DONE) completed++
    else if (state[k] === BAD) bad++
  }
  const unfinished = pace.sent - finished
  // Closes while chatting are findings; ours at the end are not.
  const closedWhileChatting = { ...closes.counts }
  await closeAll(opened.sockets, 5000)
  return {
    type: 'chat-result',
    sockets_opened: live.length,
    open_failed: opened.failed.counts,
    sent: pace.sent,
    completed,
    errors: errors.counts,
    bad,
    unfinished,
    send_window_s: pace.elapsedMs / 1000,
    first_chunk_ms: firstChunk.take(),
    done_ms: doneMs.take(),
    elu,
    closes: closedWhileChatting
  }
}
