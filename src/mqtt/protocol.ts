/**
 * The wire envelopes of docs/protocol.md (v1). Parsing never throws: a payload that is not a
 * well-formed reply comes back as a reason, which the caller counts and drops.
 */
import { isValidId } from '../ids.js'
import { parsePeerJson } from '../peer-json.js'

export const PROTOCOL_VERSION = 1

export interface HistoryTurn {
  role: 'user' | 'assistant'
  content: string
}

export interface ChatRequestEnvelope {
  v: 1
  request_id: string
  session_id: string
  user_id: string
  content: string
  history: HistoryTurn[]
  reply_to: string
  /** Epoch ms after which the gateway has given up: a worker should drop the work. */
  deadline: number
}

/**
 * `worker_id` (v1.1) names the announced worker that sent the reply: after a request was
 * re-dispatched, replies from the worker it was taken from are dropped. Absent from v1 workers.
 */
export type ReplyEnvelope =
  /** `seq` (v1.1): 1, 2, 3 ... per request; absent from v1 workers. */
  | { v: 1, request_id: string, type: 'chunk', delta: string, seq?: number, worker_id?: string }
  | { v: 1, request_id: string, type: 'done', content: string, worker_id?: string }
  /** `retry` (v1.1): true with `busy`, the worker could not take it and another may. */
  | { v: 1, request_id: string, type: 'error', error: string, retry?: boolean, worker_id?: string }
  /** v1.1: an announced worker took the request. */
  | { v: 1, request_id: string, type: 'ack', worker_id: string }

/**
 * What else arrives on a gateway's reply topic (v1.1, several gateways), for the stream resume
 * (src/cluster/stream-resume.ts), never for a request's actor: `resumed`, a worker answering a
 * `resume` (it re-sends the chunks after `after_seq` and goes on replying here; `deadline` is
 * the request's own); `handover`, the gateway that holds a live stream saying it asked the
 * stream's worker to answer here (its `resumed` follows); `moved`, a worker telling the gateway
 * it used to answer that it answers another now; `replay`, a finished stream sent whole.
 */
export type ResumeReply =
  | { v: 1, request_id: string, type: 'resumed', session_id: string, user_id: string, deadline: number, worker_id?: string }
  | { v: 1, request_id: string, type: 'handover', from: string }
  /** To the gateway that held it: the worker now answers `to` (a resume moved it); this gateway lets its chat go. */
  | { v: 1, request_id: string, type: 'moved', to: string, worker_id?: string }
  /** A finished stream the other gateway still kept: every chunk and its end, in one message. */
  | { v: 1, request_id: string, type: 'replay', from: string, chunks: string[], end: ReplayEnd }

/** How a replayed stream ended: its `done` (message id and text) or its error (a catalogue code). */
export type ReplayEnd = { type: 'done', message_id: string, content: string } | { type: 'error', error: string, message: string }

function parseReplayEnd (value: unknown): ReplayEnd | null {
  if (typeof value !== 'object' || value === null) return null
  const e = value as Record<string, unknown>
  if (e.type === 'done' && typeof e.message_id === 'string' && e.message_id.length <= 64 && typeof e.content === 'string') return { type: 'done', message_id: e.message_id, content: storable(e.content) }
  if (e.type === 'error' && typeof e.error === 'string' && e.error.length <= 64 && typeof e.message === 'string' && e.message.length <= 1000) return { type: 'error', error: e.error, message: e.message }
  return null
}

/** The `error` a worker answers when it is at capacity (with `retry: true`). */
export const BUSY = 'busy'

export type ParsedReply =
  | { ok: true, reply: ReplyEnvelope | ResumeReply }
  | { ok: false, reason: 'malformed' }

export function encodeRequest (request: ChatRequestEnvelope): string {
  return JSON.stringify(request)
}

/** Why the gateway stopped waiting for a request (contract v1.1: cancel reaches the worker). */
export type CancelCause = 'client_cancelled' | 'client_gone' | 'deadline' | 'stalled' | 'shutdown' | 'worker_lost'

export interface CancelEnvelope {
  v: 1
  request_id: string
  reason: CancelCause
}

export function encodeCancel (cancel: CancelEnvelope): string {
  return JSON.stringify(cancel)
}

/** A cancel as a worker reads it; null when the payload is not one. */
export function parseCancel (payload: Buffer | string): CancelEnvelope | null {
  const json = parsePeerJson(typeof payload === 'string' ? payload : payload.toString('utf8'))
  if (!json.ok || typeof json.value !== 'object' || json.value === null) return null
  const c = json.value as Record<string, unknown>
  if (c.v !== PROTOCOL_VERSION || !isValidId(c.request_id) || typeof c.reason !== 'string') return null
  return { v: 1, request_id: c.request_id, reason: c.reason as CancelCause }
}

const MALFORMED: ParsedReply = { ok: false, reason: 'malformed' }

export function parseReply (payload: Buffer | string): ParsedReply {
  const json = parsePeerJson(typeof payload === 'string' ? payload : payload.toString('utf8'))
  if (!json.ok) return MALFORMED
  const value = json.value
  if (typeof value !== 'object' || value === null) return MALFORMED
  const r = value as Record<string, unknown>
  if (r.v !== PROTOCOL_VERSION || !isValidId(r.request_id)) return MALFORMED
  const id = r.request_id
  // Optional; one that is not a worker id (a v1 worker's own field, say a hostname) is ignored
  // rather than the reply refused.
  const from = isValidId(r.worker_id) ? { worker_id: r.worker_id } : {}
  switch (r.type) {
    case 'chunk': {
      if (typeof r.delta !== 'string') return MALFORMED
      if (r.seq === undefined) return { ok: true, reply: { v: 1, request_id: id, type: 'chunk', delta: storable(r.delta), ...from } }
      if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 1) return MALFORMED
      return { ok: true, reply: { v: 1, request_id: id, type: 'chunk', delta: storable(r.delta), seq: r.seq as number, ...from } }
    }
    case 'done':
      return typeof r.content === 'string' ? { ok: true, reply: { v: 1, request_id: id, type: 'done', content: storable(r.content), ...from } } : MALFORMED
    case 'error':
      if (typeof r.error !== 'string') return MALFORMED
      return { ok: true, reply: { v: 1, request_id: id, type: 'error', error: storable(r.error), ...(r.retry === true ? { retry: true } : {}), ...from } }
    case 'ack':
      return isValidId(r.worker_id) ? { ok: true, reply: { v: 1, request_id: id, type: 'ack', worker_id: r.worker_id } } : MALFORMED
    case 'resumed':
      if (!isValidId(r.session_id) || typeof r.user_id !== 'string' || r.user_id.length > 256 || !Number.isSafeInteger(r.deadline)) return MALFORMED
      return { ok: true, reply: { v: 1, request_id: id, type: 'resumed', session_id: r.session_id, user_id: r.user_id, deadline: r.deadline as number, ...from } }
    case 'handover':
      return isValidId(r.from) ? { ok: true, reply: { v: 1, request_id: id, type: 'handover', from: r.from } } : MALFORMED
    case 'moved':
      return isValidId(r.to) ? { ok: true, reply: { v: 1, request_id: id, type: 'moved', to: r.to, ...from } } : MALFORMED
    case 'replay': {
      const end = parseReplayEnd(r.end)
      if (!isValidId(r.from) || end === null || !Array.isArray(r.chunks) || !r.chunks.every((c) => typeof c === 'string')) return MALFORMED
      return { ok: true, reply: { v: 1, request_id: id, type: 'replay', from: r.from, chunks: (r.chunks as string[]).map(storable), end } }
    }
    default:
      return MALFORMED
  }
}

/**
 * v1.1, several gateways: a gateway asks for a stream it does not hold. On `<prefix>/cluster/resume`
 * the gateway that holds it hands it over; on `<prefix>/chat/resume` (and `.../<worker_id>`) the
 * worker that runs it re-sends every chunk after `after_seq` to `reply_to` and goes on there.
 * `user_id` is who asks (null: relay mode, where a request id is the only key): a worker or
 * gateway holding the request for another user ignores it.
 */
export interface ResumeEnvelope {
  v: 1
  request_id: string
  reply_to: string
  after_seq: number
  user_id: string | null
  /** The asking gateway's instance id. */
  from: string
}

export function encodeResume (resume: ResumeEnvelope): string {
  return JSON.stringify(resume)
}

/** A resume as a worker or gateway reads it; null when the payload is not one. */
export function parseResume (payload: Buffer | string): ResumeEnvelope | null {
  if (payload.length > 4096) return null
  const json = parsePeerJson(typeof payload === 'string' ? payload : payload.toString('utf8'))
  if (!json.ok || typeof json.value !== 'object' || json.value === null) return null
  const r = json.value as Record<string, unknown>
  if (r.v !== PROTOCOL_VERSION || !isValidId(r.request_id) || !isValidId(r.from)) return null
  if (typeof r.reply_to !== 'string' || r.reply_to.length > 512 || /[+#\u0000]/.test(r.reply_to)) return null
  if (!Number.isSafeInteger(r.after_seq) || (r.after_seq as number) < 0) return null
  if (r.user_id !== null && (typeof r.user_id !== 'string' || r.user_id.length > 256)) return null
  return { v: 1, request_id: r.request_id, reply_to: r.reply_to, after_seq: r.after_seq as number, user_id: r.user_id, from: r.from }
}

/** Presence (contract v1.1): what a worker announces on `<prefix>/workers/<worker_id>`. */
export interface HeartbeatEnvelope {
  v: 1
  worker_id: string
  /** `draining` (v1.1, Tether's): alive and finishing its chats, taking no new ones. */
  status: 'online' | 'draining' | 'offline'
  capacity: number
  in_flight: number
  heartbeat_ms: number
}

/**
 * Bounds on what a heartbeat may claim. A capacity past WORKER_CAPACITY_MAX is a bug or a lie
 * that would pull every chat to one worker; an interval under 100 ms would be a flood, one
 * over a minute would leave a dead worker "online" for three.
 */
export const PRESENCE_LIMITS = Object.freeze({ maxCapacity: 10_000, maxInFlight: 1_000_000, minHeartbeatMs: 100, maxHeartbeatMs: 60_000 })

export type ParsedHeartbeat =
  | { ok: true, heartbeat: HeartbeatEnvelope }
  /** `malformed`: not a heartbeat; `impostor`: names a worker other than its topic's; `absurd`: numbers out of bounds. */
  | { ok: false, reason: 'malformed' | 'impostor' | 'absurd' }

function boundedInt (value: unknown, min: number, max: number): boolean {
  return Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max
}

/** `topicWorkerId` is the last level of the topic it came on; the payload must name the same worker. */
export function parseHeartbeat (payload: Buffer, topicWorkerId: string): ParsedHeartbeat {
  const json = parsePeerJson(payload.toString('utf8'))
  if (!json.ok || typeof json.value !== 'object' || json.value === null) return { ok: false, reason: 'malformed' }
  const h = json.value as Record<string, unknown>
  if (h.v !== PROTOCOL_VERSION || !isValidId(h.worker_id)) return { ok: false, reason: 'malformed' }
  if (h.worker_id !== topicWorkerId) return { ok: false, reason: 'impostor' }
  if (h.status !== 'online' && h.status !== 'draining' && h.status !== 'offline') return { ok: false, reason: 'malformed' }
  // A last will is written once, at connect: its numbers are stale by the time it is sent.
  if (h.status === 'offline') return { ok: true, heartbeat: { v: 1, worker_id: h.worker_id, status: 'offline', capacity: 0, in_flight: 0, heartbeat_ms: PRESENCE_LIMITS.minHeartbeatMs } }
  for (const field of ['capacity', 'in_flight', 'heartbeat_ms']) if (typeof h[field] !== 'number') return { ok: false, reason: 'malformed' }
  const L = PRESENCE_LIMITS
  if (!boundedInt(h.capacity, 0, L.maxCapacity) || !boundedInt(h.in_flight, 0, L.maxInFlight) || !boundedInt(h.heartbeat_ms, L.minHeartbeatMs, L.maxHeartbeatMs)) {
    return { ok: false, reason: 'absurd' }
  }
  return { ok: true, heartbeat: { v: 1, worker_id: h.worker_id, status: h.status, capacity: h.capacity as number, in_flight: h.in_flight as number, heartbeat_ms: h.heartbeat_ms as number } }
}

export function encodeHeartbeat (heartbeat: HeartbeatEnvelope): string {
  return JSON.stringify(heartbeat)
}

/**
 * Worker text as PostgreSQL's `text` can hold it: NUL (U+0000) is the one character it refuses
 * ("invalid byte sequence"), which turned a model's stray NUL into a 500 for the user. It
 * carries no meaning in a chat, so it is removed rather than the reply refused. Lone
 * surrogates need nothing here: they are stored and sent as U+FFFD by the UTF-8 encoders.
 */
export function storable (text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '') : text
}
