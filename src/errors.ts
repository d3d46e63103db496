/**
 * The error catalogue: every error code a client can see, its HTTP status and its message.
 * Codes are permanent (clients branch on them); messages may be improved. docs/errors.md
 * documents each one and a test keeps the two in step.
 */
export const ERRORS = {
  invalid_request: { status: 400, message: 'The request is malformed.' },
  unauthorized: { status: 401, message: 'Authentication is required.' },
  invalid_credentials: { status: 401, message: 'Wrong username or password.' },
  not_found: { status: 404, message: 'No such route.' },
  session_not_found: { status: 404, message: 'No such chat session.' },
  stream_not_found: { status: 404, message: 'No such stream, or it can no longer be replayed.' },
  method_not_allowed: { status: 405, message: 'This route does not accept that method.' },
  username_taken: { status: 409, message: 'That username is taken.' },
  cancelled: { status: 409, message: 'The chat was cancelled.' },
  already_settled: { status: 409, message: 'The chat has already ended.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  too_many_requests: { status: 429, message: 'Too many chats in flight; retry later.' },
  rate_limited: { status: 429, message: 'Too many failed logins; retry later.' },
  headers_too_large: { status: 431, message: 'The request headers are too large.' },
  llm_error: { status: 502, message: 'The LLM worker reported an error.' },
  llm_unavailable: { status: 503, message: 'The model broker is not reachable right now.' },
  shutting_down: { status: 503, message: 'The server is shutting down.' },
  no_workers: { status: 503, message: 'No LLM worker can take this chat right now.' },
  worker_lost: { status: 503, message: 'The LLM worker answering this chat stopped responding.' },
  stream_interrupted: { status: 503, message: 'The gateway that held this stream stopped and its worker could not resume it; the answer is incomplete.' },
  db_unavailable: { status: 503, message: 'The database is not reachable right now.' },
  overloaded: { status: 503, message: 'The server is overloaded; retry later.' },
  llm_timeout: { status: 504, message: 'The model did not answer in time.' },
  llm_stalled: { status: 504, message: 'The model stopped answering mid-way.' },
  internal_error: { status: 500, message: 'Unexpected server error.' }
} as const satisfies Record<string, { status: number, message: string }>

export type ErrorCode = keyof typeof ERRORS

export interface ErrorBody {
  error: ErrorCode
  message: string
  request_id: string
}

/**
 * An error that maps onto the catalogue; anything else thrown becomes internal_error.
 * It is an answer, not a bug: it carries no stack trace. Capturing one walked every frame
 * under it (uWS, the XState interpreter) and cost more than the rest of a cancel.
 */
export class TetherError extends Error {
  readonly code: ErrorCode
  readonly status: number
  /** Seconds, for the Retry-After header (429 and 503). */
  readonly retryAfterS: number | undefined
  constructor (code: ErrorCode, message?: string, retryAfterS?: number) {
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(message ?? ERRORS[code].message)
    Error.stackTraceLimit = limit
    this.name = 'TetherError'
    this.code = code
    this.status = ERRORS[code].status
    this.retryAfterS = retryAfterS
  }
}

export function errorBody (code: ErrorCode, requestId: string, message?: string): ErrorBody {
  return { error: code, message: message ?? ERRORS[code].message, request_id: requestId }
}
