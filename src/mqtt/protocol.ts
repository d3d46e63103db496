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

export type ReplyEnvelope =
  /** `seq` (v1.1): 1, 2, 3 ... per request; absent from v1 workers. */
  | { v: 1, request_id: string, type: 'chunk', delta: string, seq?: number }
  | { v: 1, request_id: string, type: 'done', content: string }
  | { v: 1, request_id: string, type: 'error', error: string }

export type ParsedReply =
  | { ok: true, reply: ReplyEnvelope }
  | { ok: false, reason: 'malformed' }

export function encodeRequest (request: ChatRequestEnvelope): string {
  return JSON.stringify(request)
}

/** Why the gateway stopped waiting for a request (contract v1.1: cancel reaches the worker). */
export type CancelCause = 'client_cancelled' | 'client_gone' | 'deadline' | 'stalled' | 'shutdown'

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

export function parseReply (payload: Buffer | string): ParsedReply {
  const json = parsePeerJson(typeof payload === 'string' ? payload : payload.toString('utf8'))
  if (!json.ok) return { ok: false, reason: 'malformed' }
  const value = json.value
  if (typeof value !== 'object' || value === null) return { ok: false, reason: 'malformed' }
  const r = value as Record<string, unknown>
  if (r.v !== PROTOCOL_VERSION || !isValidId(r.request_id)) return { ok: false, reason: 'malformed' }
  const id = r.request_id
  switch (r.type) {
    case 'chunk': {
      if (typeof r.delta !== 'string') return { ok: false, reason: 'malformed' }
      if (r.seq === undefined) return { ok: true, reply: { v: 1, request_id: id, type: 'chunk', delta: storable(r.delta) } }
      if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 1) return { ok: false, reason: 'malformed' }
      return { ok: true, reply: { v: 1, request_id: id, type: 'chunk', delta: storable(r.delta), seq: r.seq as number } }
    }
    case 'done':
      return typeof r.content === 'string' ? { ok: true, reply: { v: 1, request_id: id, type: 'done', content: storable(r.content) } } : { ok: false, reason: 'malformed' }
    case 'error':
      return typeof r.error === 'string' ? { ok: true, reply: { v: 1, request_id: id, type: 'error', error: storable(r.error) } } : { ok: false, reason: 'malformed' }
    default:
      return { ok: false, reason: 'malformed' }
  }
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
