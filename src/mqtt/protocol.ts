/**
 * The wire envelopes of docs/protocol.md (v1). Parsing never throws: a payload that is not a
 * well-formed reply comes back as a reason, which the caller counts and drops.
 */
import { isValidId } from '../ids.js'

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
  | { v: 1, request_id: string, type: 'chunk', delta: string }
  | { v: 1, request_id: string, type: 'done', content: string }
  | { v: 1, request_id: string, type: 'error', error: string }

export type ParsedReply =
  | { ok: true, reply: ReplyEnvelope }
  | { ok: false, reason: 'malformed' }

export function encodeRequest (request: ChatRequestEnvelope): string {
  return JSON.stringify(request)
}

export function parseReply (payload: Buffer | string): ParsedReply {
  let value: unknown
  try {
    value = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'))
  } catch {
    return { ok: false, reason: 'malformed' }
  }
  if (typeof value !== 'object' || value === null) return { ok: false, reason: 'malformed' }
  const r = value as Record<string, unknown>
  if (r.v !== PROTOCOL_VERSION || !isValidId(r.request_id)) return { ok: false, reason: 'malformed' }
  switch (r.type) {
    case 'chunk':
      return typeof r.delta === 'string' ? { ok: true, reply: r as ReplyEnvelope } : { ok: false, reason: 'malformed' }
    case 'done':
      return typeof r.content === 'string' ? { ok: true, reply: r as ReplyEnvelope } : { ok: false, reason: 'malformed' }
    case 'error':
      return typeof r.error === 'string' ? { ok: true, reply: r as ReplyEnvelope } : { ok: false, reason: 'malformed' }
    default:
      return { ok: false, reason: 'malformed' }
  }
}
