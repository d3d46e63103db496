import t from 'tap'
import { createHistoryTrimmer } from '../../../src/chat/history-trimmer.js'
import { silentLogger } from '../../../src/log.js'
import type { HistoryTurn } from '../../../src/mqtt/protocol.js'
import { ThreadPoolError, type ThreadPool } from '../../../src/threads/thread-pool.js'

const user = (content: string): HistoryTurn => ({ role: 'user', content })
const assistant = (content: string): HistoryTurn => ({ role: 'assistant', content })

/** A pool that records what it is asked and answers with `answer`. */
function fakePool (answer: (task: string, input: any) => Promise<unknown>) {
  const calls: Array<{ task: string, input: any, options: unknown }> = []
  const pool: Pick<ThreadPool, 'run'> = {
    run: async <T>(task: string, input: unknown, options?: unknown): Promise<T> => {
      calls.push({ task, input, options })
      return await answer(task, input) as T
    }
  }
  return { pool, calls }
}

t.test('a history larger than the budget in bytes goes to the trim-history task, and its answer is used', async (t) => {
  const history = [user('first'), assistant('second'), user('third')]
  const { pool, calls } = fakePool(async () => ({ history: history.slice(1), tokens: 2 }))
  const trimmer = createHistoryTrimmer(pool, { maxTokens: 15, log: silentLogger() })
  t.same(await trimmer.trim(history), history.slice(1))
  t.same(calls.map((c) => [c.task, c.input]), [['trim-history', { history, maxTokens: 15 }]])
  t.same(calls[0]?.options, {}, 'no deadline of its own: the pool\'s default applies')
})

t.test('a budget of 0, an empty history and one no larger than the budget in bytes cost no thread hop', async (t) => {
  const { pool, calls } = fakePool(async () => { throw new Error('not expected') })
  const history = [user('a'.repeat(10_000))]
  t.equal(await createHistoryTrimmer(pool, { maxTokens: 0, log: silentLogger() }).trim(history), history)
  t.same(await createHistoryTrimmer(pool, { maxTokens: 10, log: silentLogger() }).trim([]), [])
  // A token is at least one byte: 16 bytes ("first" 5 + "second" 6 + "thé" 4 + "x" 1) are at most 16 tokens.
  const small = [user('first'), assistant('second'), user('thé'), assistant('x')]
  t.equal(await createHistoryTrimmer(pool, { maxTokens: 16, log: silentLogger() }).trim(small), small)
  t.equal(calls.length, 0)
})

t.test('a full or late pool does not fail the chat: the history is cut to the budget in UTF-8 bytes', async (t) => {
  const history = [user('older turn'), assistant('é'.repeat(4)), user('new')]
  for (const code of ['overloaded', 'task_timeout'] as const) {
    const { pool } = fakePool(async () => { throw new ThreadPoolError(code, code) })
    const trimmer = createHistoryTrimmer(pool, { maxTokens: 11, log: silentLogger() })
    // "new" is 3 bytes, "éééé" 8: 11 in all; "older turn" would not fit.
    t.same(await trimmer.trim(history), history.slice(1), `on ${code}`)
  }
})

t.test('a stopped pool and a task that threw are passed on, not papered over', async (t) => {
  const stopped = createHistoryTrimmer(fakePool(async () => { throw new ThreadPoolError('pool_stopped', 'stopped') }).pool, { maxTokens: 5, log: silentLogger() })
  await t.rejects(stopped.trim([user('more than five bytes')]), { code: 'pool_stopped' })
  const broken = createHistoryTrimmer(fakePool(async () => { throw new TypeError('bad input') }).pool, { maxTokens: 5, log: silentLogger() })
  await t.rejects(broken.trim([user('more than five bytes')]), TypeError)
})

