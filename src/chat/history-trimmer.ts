/**
 * Trims a chat's history to a token budget (HISTORY_MAX_TOKENS) before it is sent to a worker.
 * Tokenizing is CPU work proportional to the text, so it runs on the thread pool
 * (workers/trim-history.worker.ts); the caller has already cut the history by message count
 * and characters, which bounds that work.
 *
 * A byte-level BPE token is at least one UTF-8 byte, so a history of at most `maxTokens` bytes
 * fits without being tokenized: most do, and they cost no thread hop. When the pool cannot
 * trim in time (backlog full, or the task's deadline passed) the chat still goes ahead, with
 * the history cut on the event loop to `maxTokens` bytes by the same rule: never over the
 * budget, only shorter than a tokenizer would keep.
 */
import type { Logger } from '../log.js'
import { trimToBytes } from './history-budget.js'
import type { HistoryTurn } from '../mqtt/protocol.js'
import { ThreadPoolError, type ThreadPool } from '../threads/thread-pool.js'
import type { TrimHistoryInput, TrimHistoryOutput } from '../../workers/trim-history.worker.js'

export interface HistoryTrimmer {
  /** The newest turns within the budget, oldest first. */
  trim (history: HistoryTurn[]): Promise<HistoryTurn[]>
}

export interface HistoryTrimmerOptions {
  /** Token budget; 0 turns token trimming off (no thread hop). */
  maxTokens: number
  /** Deadline of one trim, queueing included; default: the pool's (THREAD_TASK_TIMEOUT_MS). */
  timeoutMs?: number
  log: Pick<Logger, 'warn'>
}

export function createHistoryTrimmer (pool: Pick<ThreadPool, 'run'>, options: HistoryTrimmerOptions): HistoryTrimmer {
  const { maxTokens, timeoutMs, log } = options
  return {
    async trim (history) {
      if (maxTokens === 0 || utf8Bytes(history) <= maxTokens) return history
      const input: TrimHistoryInput = { history, maxTokens }
      try {
        const result = await pool.run<TrimHistoryOutput>('trim-history', input, timeoutMs !== undefined ? { timeoutMs } : {})
        return result.history
      } catch (err) {
        if (!(err instanceof ThreadPoolError) || err.code === 'pool_stopped') throw err
        log.warn({ code: err.code, max_tokens: maxTokens }, 'history token trimming not done in time; cut to the same number of bytes instead')
        return trimToBytes(history, maxTokens)
      }
    }
  }
}

function utf8Bytes (history: HistoryTurn[]): number {
  let bytes = 0
  for (const turn of history) bytes += Buffer.byteLength(turn.content, 'utf8')
  return bytes
}
