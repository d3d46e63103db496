import t from 'tap'
import { CONTENT_REJECTED_MESSAGE, createContentScreen, SCREENING_TIMED_OUT_MESSAGE } from '../../../src/chat/content-screen.js'
import { TetherError } from '../../../src/errors.js'
import { silentLogger } from '../../../src/log.js'
import { ThreadPoolError, type ThreadPool } from '../../../src/threads/thread-pool.js'

function fakePool (answer: () => Promise<unknown>) {
  const calls: Array<{ task: string, input: any, options: any }> = []
  const pool: Pick<ThreadPool, 'run'> = {
    run: async <T>(task: string, input: unknown, options?: unknown): Promise<T> => {
      calls.push({ task, input, options })
      return await answer() as T
    }
  }
  return { pool, calls }
}

const patterns = [{ source: 'secret', flags: 'i' }, { source: 'plan', flags: '' }]

t.test('a message no filter matches passes; the patterns and the deadline go to the screen-content task', async (t) => {
  const { pool, calls } = fakePool(async () => ({ blocked: false }))
  await createContentScreen(pool, { patterns, timeoutMs: 150, log: silentLogger() }).check('hello')
  t.same(calls, [{ task: 'screen-content', input: { content: 'hello', patterns }, options: { timeoutMs: 150 } }])
})

t.test('a match is 400 invalid_request that says a filter refused it, not which one', async (t) => {
  const logged: unknown[] = []
  const { pool } = fakePool(async () => ({ blocked: true, pattern: 1 }))
  const screen = createContentScreen(pool, { patterns, timeoutMs: 150, log: { info: (obj: unknown) => { logged.push(obj) } } as any })
  const err = await screen.check('the plan').then(() => null, (e: unknown) => e)
  t.type(err, TetherError)
  t.match(err, { code: 'invalid_request', status: 400, message: CONTENT_REJECTED_MESSAGE })
  t.notMatch((err as Error).message, /plan/)
  t.same(logged, [{ pattern: 1 }], 'the operator\'s log names the pattern')
})

t.test('screening past its deadline is 503 overloaded with its own message and a Retry-After', async (t) => {
  const { pool } = fakePool(async () => { throw new ThreadPoolError('task_timeout', 'late') })
  await t.rejects(createContentScreen(pool, { patterns, timeoutMs: 150, log: silentLogger() }).check('aaaa!'),
    { code: 'overloaded', status: 503, message: SCREENING_TIMED_OUT_MESSAGE, retryAfterS: 1 })
})

t.test('the pool\'s own refusals pass through for the failure mapping', async (t) => {
  for (const code of ['overloaded', 'pool_stopped'] as const) {
    const { pool } = fakePool(async () => { throw new ThreadPoolError(code, code) })
    await t.rejects(createContentScreen(pool, { patterns, timeoutMs: 150, log: silentLogger() }).check('x'), { name: 'ThreadPoolError', code })
  }
})

t.test('no patterns: no thread hop', async (t) => {
  const { pool, calls } = fakePool(async () => { throw new Error('not expected') })
  await createContentScreen(pool, { patterns: [], timeoutMs: 150, log: silentLogger() }).check('anything')
  t.equal(calls.length, 0)
})
