import t from 'tap'
import { silentLogger } from '../../../src/log.js'
import { createThreadPool } from '../../../src/threads/thread-pool.js'
import screenContent, { type ScreenContentOutput, type ScreenPattern } from '../../../workers/screen-content.worker.js'

// One pool for the file, on the real clock: the runaway pattern below must really be stopped.
// One thread, so "the pool serves the next task" can only mean the stuck thread was replaced.
const pool = createThreadPool({ threads: 1, maxQueue: 8, defaultTimeoutMs: 30_000, log: silentLogger() })
pool.start()
t.teardown(() => pool.stop())

const screen = (content: string, patterns: ScreenPattern[], timeoutMs = 30_000): Promise<ScreenContentOutput> =>
  pool.run<ScreenContentOutput>('screen-content', { content, patterns }, { timeoutMs })
const p = (source: string, flags = ''): ScreenPattern => ({ source, flags })

/** Exponential backtracking: each extra "a" doubles the work; 40 of them take hours. */
const CATASTROPHIC = p('(a+)+$')
const EVIL_INPUT = 'a'.repeat(40) + '!'
const DEADLINE_MS = 200

t.test('a message matching a pattern is blocked, naming the first pattern that matched', async (t) => {
  t.same(await screen('the secret plan is ready', [p('nothing'), p('secret\\s+plan'), p('plan')]), { blocked: true, pattern: 1 })
})

t.test('a message matching no pattern passes, with no pattern named', async (t) => {
  const result = await screen('hello there', [p('secret'), p('^bye')])
  t.same(result, { blocked: false })
  t.notOk('pattern' in result)
  t.same(await screen('anything', []), { blocked: false }, 'no patterns: nothing blocked')
})

t.test('flags apply: i matches across case, without it case matters', async (t) => {
  t.same(await screen('The SECRET Plan', [p('secret plan', 'i')]), { blocked: true, pattern: 0 })
  t.same(await screen('The SECRET Plan', [p('secret plan')]), { blocked: false })
  t.same(await screen('first\nsecond', [p('^second$', 'm')]), { blocked: true, pattern: 0 }, 'm anchors at lines')
  t.same(await screen('a\nb', [p('a.b', 's')]), { blocked: true, pattern: 0 }, 's lets . match a newline')
})

t.test('the task function is plain data in, plain data out', async (t) => {
  t.same(await screenContent({ content: 'abc', patterns: [p('B', 'i')] }), { blocked: true, pattern: 0 })
  await t.rejects(screenContent({ content: 42 as unknown as string, patterns: [] }), TypeError)
})

t.test('a catastrophic pattern times out at its deadline, the loop keeps turning, and the pool serves the next task', async (t) => {
  // Warm the thread up first, so the deadline measures the match, not the thread's start.
  t.same(await screen('warm', [p('x')]), { blocked: false })

  let turns = 0
  let settled = false
  const spin = (): void => { if (!settled) { turns++; setImmediate(spin) } }
  setImmediate(spin)
  const started = performance.now()
  const outcome = await screen(EVIL_INPUT, [p('harmless'), CATASTROPHIC], DEADLINE_MS).then(
    (value) => ({ value }),
    (error: unknown) => ({ error })
  )
  settled = true
  const tookMs = performance.now() - started

  t.match(outcome, { error: { name: 'ThreadPoolError', code: 'task_timeout' } }, 'rejected with task_timeout')
  t.ok(tookMs >= DEADLINE_MS - 20, `not before the deadline (${Math.round(tookMs)} ms)`)
  t.ok(tookMs < 10_000, `well before the match could finish (${Math.round(tookMs)} ms)`)
  // A loop blocked for the whole deadline would have turned once or twice.
  t.ok(turns > 50, `the event loop turned ${turns} times meanwhile`)

  t.same(await screen('the secret plan', [p('secret')]), { blocked: true, pattern: 0 }, 'a fresh thread serves the next task')
  t.match(pool.stats(), { threads: 1, timedOut: 1 })
})
