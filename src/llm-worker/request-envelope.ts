/**
 * The worker's side of docs/protocol.md: reading a chat request and writing replies. Parsing
 * never throws; it says why a payload is unusable and, when it can, where an error reply
 * could still go.
 */
import { parsePeerJson } from '../peer-json.js'
import { isValidId } from '../ids.js'
import { BUSY, PROTOCOL_VERSION, type ChatRequestEnvelope, type HistoryTurn, type ReplyEnvelope } from '../mqtt/protocol.js'

export type ParsedRequest =
  | { ok: true, request: ChatRequestEnvelope }
  /** `version`: another protocol version, ignored as the protocol asks. */
  | { ok: false, reason: 'version' }
  /** `malformed`: `replyTo`/`requestId` are set when both are usable for an error reply. */
  | { ok: false, reason: 'malformed', problem: string, replyTo?: string, requestId?: string }

/**
 * `replyPrefix` (`<prefix>/chat/reply/`) bounds where the worker publishes: a request cannot
 * make it write to any other topic (the request topic, templates, another tenant's prefix).
 */
export function parseChatRequest (payload: Buffer | string, replyPrefix: string): ParsedRequest {
  const json = parsePeerJson(typeof payload === 'string' ? payload : payload.toString('utf8'))
  if (!json.ok) return { ok: false, reason: 'malformed', problem: json.reason === 'too_deep' ? 'nested too deep' : 'not JSON' }
  const value = json.value
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, reason: 'malformed', problem: 'not an object' }
  const r = value as Record<string, unknown>
  if (r.v !== PROTOCOL_VERSION) return { ok: false, reason: 'version' }
  const requestId = isValidId(r.request_id) ? r.request_id : undefined
  const replyTo = typeof r.reply_to === 'string' && isValidId(r.reply_to.slice(replyPrefix.length)) && r.reply_to.startsWith(replyPrefix)
    ? r.reply_to
    : undefined
  const bad = (problem: string): ParsedRequest => ({
    ok: false,
    reason: 'malformed',
    problem,
    ...(requestId !== undefined && replyTo !== undefined ? { requestId, replyTo } : {})
  })
  if (requestId === undefined) return bad('request_id missing or invalid')
  if (replyTo === undefined) return bad(`reply_to must be ${replyPrefix}<id>`)
  if (typeof r.content !== 'string') return bad('content must be a string')
  if (typeof r.deadline !== 'number' || !Number.isFinite(r.deadline)) return bad('deadline must be a number (epoch ms)')
  if (typeof r.session_id !== 'string' || typeof r.user_id !== 'string') return bad('session_id and user_id must be strings')
  const history = r.history === undefined ? [] : r.history
  if (!Array.isArray(history) || !history.every(isTurn)) return bad('history must be a list of {role: user|assistant, content}')
  return {
    ok: true,
    request: {
      v: PROTOCOL_VERSION,
      request_id: requestId,
      session_id: r.session_id,
      user_id: r.user_id,
      content: r.content,
      history: history.map((turn) => ({ role: turn.role, content: turn.content })),
      reply_to: replyTo,
      deadline: r.deadline
    }
  }
}

function isTurn (value: unknown): value is HistoryTurn {
  if (typeof value !== 'object' || value === null) return false
  const turn = value as Record<string, unknown>
  return (turn.role === 'user' || turn.role === 'assistant') && typeof turn.content === 'string'
}

/** `seq` (contract v1.1): 1, 2, 3 ... per request, so the gateway can drop a redelivered chunk. */
export function chunkReply (requestId: string, delta: string, seq: number): ReplyEnvelope {
  return { v: PROTOCOL_VERSION, request_id: requestId, type: 'chunk', delta, seq }
}

export function doneReply (requestId: string, content: string): ReplyEnvelope {
  return { v: PROTOCOL_VERSION, request_id: requestId, type: 'done', content }
}

export function errorReply (requestId: string, error: string): ReplyEnvelope {
  return { v: PROTOCOL_VERSION, request_id: requestId, type: 'error', error }
}

/** At capacity, for a request sent to this worker alone (v1.1): the gateway tries another worker. */
export function busyReply (requestId: string): ReplyEnvelope {
  return { v: PROTOCOL_VERSION, request_id: requestId, type: 'error', error: BUSY, retry: true }
}
