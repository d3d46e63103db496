/**
 * Turns anything a request's work threw into the contract's error: a TetherError as is, an
 * unavailable database as 503 db_unavailable, a refused or late thread task as 503
 * overloaded / shutting_down, and anything else as 500 internal_error (logged with its
 * stack). Every transport answers from this one mapping: an HTTP response through
 * answerFailure (src/http/request-context.ts, also an event stream that has not started),
 * and a frame inside a stream (an SSE `error` event, a WebSocket `error` frame) from
 * failureFields below.
 */
import { classifyDbError } from './db/db-errors.js'
import { ERRORS, TetherError, type ErrorCode } from './errors.js'
import type { Logger } from './log.js'
import { ThreadPoolError } from './threads/thread-pool.js'

export interface ContractFailure {
  code: ErrorCode
  status: number
  message: string
  retryAfterS?: number
}

function failure (code: ErrorCode, message?: string, retryAfterS?: number): ContractFailure {
  return { code, status: ERRORS[code].status, message: message ?? ERRORS[code].message, ...(retryAfterS !== undefined ? { retryAfterS } : {}) }
}

export function describeFailure (err: unknown, log: Logger, context: Record<string, unknown>): ContractFailure {
  if (err instanceof TetherError) return failure(err.code, err.message, err.retryAfterS)
  if (err instanceof ThreadPoolError) {
    log.warn({ ...context, code: err.code }, 'thread pool refused or timed out a task')
    if (err.code === 'pool_stopped') return failure('shutting_down')
    return failure('overloaded', err.code === 'task_timeout' ? 'A background task ran past its deadline; retry later.' : 'Too much background work queued; retry later.', err.retryAfterS ?? 1)
  }
  if (classifyDbError(err) === 'unavailable') {
    log.warn({ ...context, err: (err as Error).message }, 'database unavailable')
    return failure('db_unavailable', undefined, 1)
  }
  log.error({ ...context, err: err instanceof Error ? err.stack : String(err) }, 'request failed')
  return failure('internal_error')
}

/**
 * The error fields a streamed transport sends once its response has started (the status line
 * is gone): the code, the message, and `retry_after_s` where an HTTP answer would carry
 * Retry-After.
 */
export function failureFields (f: ContractFailure): { error: ErrorCode, message: string, retry_after_s?: number } {
  return { error: f.code, message: f.message, ...(f.retryAfterS !== undefined ? { retry_after_s: f.retryAfterS } : {}) }
}
