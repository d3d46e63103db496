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

/** The `error` a worker answers when it is at capacity (with `retry: true`). */
export const BUSY = 'busy'

export type ParsedReply =
  | { ok: true, reply: ReplyEnvelope }
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
    default:
      return MALFORMED
  }
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
