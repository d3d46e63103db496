/**
 * Screens a chat message against the operator's CONTENT_FILTERS before anything is stored or
 * published. The matching itself is workers/screen-content.worker.ts, on the thread pool with
 * its own short deadline: an operator's pattern may backtrack for ever on some input, and that
 * must cost one replaced thread and one refused chat, never the event loop.
 */
import type { ContentFilter } from '../config.js'
import { TetherError } from '../errors.js'
import type { Logger } from '../log.js'
import { ThreadPoolError, type ThreadPool } from '../threads/thread-pool.js'
import type { ScreenContentInput, ScreenContentOutput } from '../../workers/screen-content.worker.js'

export interface ContentScreen {
  /**
   * Resolves when the message may go on. Rejects with TetherError `invalid_request` when a
   * filter matches, `overloaded` when screening ran past its deadline; the pool's other
   * refusals (ThreadPoolError `overloaded`, `pool_stopped`) pass through for describeFailure.
   */
  check (content: string): Promise<void>
}

export interface ContentScreenOptions {
  /** Validated by loadConfig (CONTENT_FILTERS). */
  patterns: readonly ContentFilter[]
  /** Deadline of one screening, queueing included (CONTENT_FILTER_TIMEOUT_MS). */
  timeoutMs: number
  log: Pick<Logger, 'info'>
}

/** Seconds: the thread is replaced at once, so a retry of other text can go through soon. */
const TIMED_OUT_RETRY_AFTER_S = 1

export const CONTENT_REJECTED_MESSAGE = 'Content rejected by a filter.'
export const SCREENING_TIMED_OUT_MESSAGE = 'Content screening timed out; retry later.'

export function createContentScreen (pool: Pick<ThreadPool, 'run'>, options: ContentScreenOptions): ContentScreen {
  const patterns = options.patterns.map(({ source, flags }) => ({ source, flags }))
  const { timeoutMs, log } = options
  return {
    async check (content) {
      if (patterns.length === 0) return
      let result: ScreenContentOutput
      try {
        const input: ScreenContentInput = { content, patterns }
        result = await pool.run<ScreenContentOutput>('screen-content', input, { timeoutMs })
      } catch (err) {
        if (err instanceof ThreadPoolError && err.code === 'task_timeout') {
          throw new TetherError('overloaded', SCREENING_TIMED_OUT_MESSAGE, TIMED_OUT_RETRY_AFTER_S)
        }
        throw err
      }
      if (result.blocked) {
        // The operator learns which filter; the client does not (it would help to get around it).
        log.info({ pattern: result.pattern }, 'chat message rejected by a content filter')
        throw new TetherError('invalid_request', CONTENT_REJECTED_MESSAGE)
      }
    }
  }
}
