import t from 'tap'
import { getPriority } from 'node:os'
import { threadId } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'
import { SimulatedClock } from 'xstate'
import { silentLogger } from '../../../src/log.js'
import { createThreadPool, threadExecArgv, ThreadPoolError, type ThreadPoolOptions } from '../../../src/threads/thread-pool.js'
import { startedFlag, whenStarted, type SpinInput } from '../../fixtures/workers/spin.worker.js'
import { spawnTs, waitExit } from '../../fixtures/run-ts.js'

const spin = fileURLToPath(new URL('../../fixtures/workers/spin.worker.ts', import.meta.url))
/** Longer than any test runs: such a task only ends by its thread being terminated. */
const FOREVER_MS = 10 * 60_000

interface Scope { teardown (fn: () => unknown): void }

function startPool (t: Scope, options: Partial<ThreadPoolOptions> = {}) {
  const clock = new SimulatedClock()
  const pool = createThreadPool({
    threads: 1,
    maxQueue: 4,
    defaultTimeoutMs: 60_000,
    log: silentLogger(),
    clock,
    tasks: { spin },
    ...options
  })
  pool.start()
  t.teardown(() => pool.stop())
  const runSpin = (input: SpinInput, runOptions?: { timeoutMs?: number, signal?: AbortSignal }) =>
    pool.run<{ threadId: number, priority: number }>('spin', input, runOptions)
  return { clock, pool, runSpin }
}

/** Records when a promise settles, without letting a rejection go unhandled. */
function watch (p: Promise<unknown>) {
  const state: { settled: boolean, error?: unknown } = { settled: false }
  const done = p.then(() => { state.settled = true }, (err: unknown) => { state.settled = true; state.error = err })
  return { state, done }
}

t.test('a task runs on a pool thread and returns its result', async (t) => {
  const { runSpin, pool } = startPool(t)
  const result = await runSpin({ ms: 0 })
  t.not(result.threadId, threadId, 'not the main thread')
  t.match(pool.stats(), { threads: 1, completed: 1, queued: 0, running: 0 })
})

t.test('worker threads run at the lower CPU priority asked for, and the event loop\'s thread keeps its own', async (t) => {
  const own = getPriority(0)
  const { runSpin } = startPool(t, { niceIncrement: 7 })
  const result = await runSpin({ ms: 0 })
  t.equal(result.priority, Math.min(19, own + 7), 'the worker thread is 7 nice steps below')
  t.equal(getPriority(0), own, 'the calling thread is untouched')
  const { runSpin: runDefault } = startPool(t, {})
  t.equal((await runDefault({ ms: 0 })).priority, own, 'no increment: the same priority')
})

t.test('a task past its deadline rejects with task_timeout and the pool serves the next task', async (t) => {
  const { clock, runSpin, pool } = startPool(t, { threads: 1 })
  const { threadId: firstThread } = await runSpin({ ms: 0 })
  const started = startedFlag()
  const runaway = runSpin({ ms: FOREVER_MS, started }, { timeoutMs: 1_000 })
  await whenStarted(started)
  clock.increment(999)
  const watched = watch(runaway)
  await Promise.resolve()
  t.equal(watched.state.settled, false, 'still running 1 ms before the deadline')
  clock.increment(1)
  await t.rejects(runaway, { name: 'ThreadPoolError', code: 'task_timeout' })
  // The only thread was spinning for ten minutes: this can only finish if it was replaced.
  const next = await runSpin({ ms: 0 })
  t.not(next.threadId, firstThread, 'served by a fresh thread')
  t.match(pool.stats(), { threads: 1, timedOut: 1, completed: 2 })
})

t.test('the default deadline applies when a task names none', async (t) => {
  const { clock, runSpin } = startPool(t, { defaultTimeoutMs: 250 })
  const started = startedFlag()
  const runaway = runSpin({ ms: FOREVER_MS, started })
  await whenStarted(started)
  clock.increment(250)
  await t.rejects(runaway, { code: 'task_timeout' })
})

t.test('a deadline also covers time spent waiting in the queue', async (t) => {
  const { clock, runSpin } = startPool(t, { threads: 1 })
  const started = startedFlag()
  const blocker = watch(runSpin({ ms: FOREVER_MS, started }, { timeoutMs: 10_000 }))
  await whenStarted(started)
  const queued = runSpin({ ms: 0 }, { timeoutMs: 1_000 })
  clock.increment(1_000)
  await t.rejects(queued, { code: 'task_timeout' }, 'rejected while still queued')
  t.equal(blocker.state.settled, false, 'the running task is left alone')
  clock.increment(9_000)
  await blocker.done
  t.match(blocker.state.error, { code: 'task_timeout' })
})

t.test('a full backlog refuses at once with overloaded and a Retry-After', async (t) => {
  const { runSpin, pool } = startPool(t, { threads: 1, maxQueue: 2 })
  const started = startedFlag()
  const running = watch(runSpin({ ms: FOREVER_MS, started }))
  await whenStarted(started)
  const waiting = [watch(runSpin({ ms: 0 })), watch(runSpin({ ms: 0 }))]
  t.match(pool.stats(), { running: 1, queued: 2 })

  const refused = watch(runSpin({ ms: 0 }))
  await refused.done
  t.type(refused.state.error, ThreadPoolError)
  t.match(refused.state.error, { code: 'overloaded', retryAfterS: Number })
  const retryAfterS = (refused.state.error as ThreadPoolError).retryAfterS ?? 0
  t.ok(retryAfterS >= 1, `Retry-After ${retryAfterS} s is at least 1 s`)
  t.equal(running.state.settled, false, 'refused before anything ahead of it finished')
  t.notOk(waiting.some((w) => w.state.settled))
  t.equal(pool.stats().overloaded, 1)
})

t.test('the caller\'s signal abandons a task with the signal\'s reason', async (t) => {
  const { runSpin } = startPool(t)
  const controller = new AbortController()
  const started = startedFlag()
  const task = runSpin({ ms: FOREVER_MS, started }, { signal: controller.signal })
  await whenStarted(started)
  const reason = new Error('client went away')
  controller.abort(reason)
  await t.rejects(task, reason)
  await t.rejects(runSpin({ ms: 0 }, { signal: controller.signal }), reason, 'an already aborted signal rejects at once')
  t.ok((await runSpin({ ms: 0 })).threadId > 0, 'the pool still serves')
})

t.test('an error thrown in the worker reaches the caller', async (t) => {
  const { runSpin, pool } = startPool(t)
  await t.rejects(runSpin({ ms: 0, fail: 'bad input' }), { message: 'bad input' })
  t.match(pool.stats(), { failed: 1 })
  t.ok((await runSpin({ ms: 0 })).threadId > 0, 'and the thread lives on')
})

t.test('an unknown task name is refused', async (t) => {
  const { pool } = startPool(t)
  await t.rejects(pool.run('no-such-task', {}), TypeError)
})

t.test('stop rejects queued and running tasks with pool_stopped', async (t) => {
  const { runSpin, pool } = startPool(t, { threads: 1 })
  const started = startedFlag()
  const running = runSpin({ ms: FOREVER_MS, started })
  await whenStarted(started)
  const queued = runSpin({ ms: 0 })
  const rejected = Promise.all([
    t.rejects(running, { code: 'pool_stopped' }, 'the running task'),
    t.rejects(queued, { code: 'pool_stopped' }, 'the queued task')
  ])
  await pool.stop()
  await rejected
  t.match(pool.stats(), { threads: 0, queued: 0, running: 0 })
})

t.test('no thread exists before start or after stop', async (t) => {
  const pool = createThreadPool({ threads: 2, maxQueue: 0, defaultTimeoutMs: 1_000, log: silentLogger(), clock: new SimulatedClock(), tasks: { spin } })
  t.teardown(() => pool.stop())
  t.equal(pool.stats().threads, 0)
  await t.rejects(pool.run('spin', { ms: 0 }), { code: 'pool_stopped' }, 'before start')
  pool.start()
  await pool.run('spin', { ms: 0 })
  await pool.stop()
  await t.rejects(pool.run('spin', { ms: 0 }), { code: 'pool_stopped' }, 'after stop')
  await pool.stop()
  t.pass('a second stop is harmless')
})

t.test('bad options are refused at construction', async (t) => {
  const log = silentLogger()
  t.throws(() => createThreadPool({ threads: 0, maxQueue: 1, defaultTimeoutMs: 1, log }), RangeError)
  t.throws(() => createThreadPool({ threads: 1, maxQueue: -1, defaultTimeoutMs: 1, log }), RangeError)
  t.throws(() => createThreadPool({ threads: 1, maxQueue: 1, defaultTimeoutMs: 0, log }), RangeError)
})

t.test('after stop the process exits by itself: no thread, timer or port left behind', async (t) => {
  const child = spawnTs('test/fixtures/workers/pool-exit.ts', {})
  const exit = await waitExit(child, 60_000)
  t.equal(exit.code, 0, exit.stderr)
  const report = JSON.parse(exit.stdout.trim().split('\n').pop() ?? '{}') as unknown
  t.match(report, {
    ran: 'ok',
    timedOut: 'task_timeout',
    leftRunning: 'pool_stopped',
    stats: { threads: 0, completed: 1, timedOut: 1 }
  })
})

t.test('worker threads get the process\'s module-loading flags and none of the flags Node refuses in workers', async (t) => {
  t.same(
    threadExecArgv(['--expose-gc', '--max-old-space-size=200', '--import=loader.mjs', '--require', 'hook.cjs', '--enable-source-maps', '--title=x', '--cpu-prof'], true),
    ['--import=loader.mjs', '--require', 'hook.cjs', '--enable-source-maps', '--no-experimental-require-module']
  )
  t.same(threadExecArgv([], false), [])
})

t.test('a process started with --expose-gc still starts its pool and runs tasks', async (t) => {
  const child = spawnTs('test/fixtures/workers/pool-exit.ts', {}, ['--expose-gc'])
  const exit = await waitExit(child, 90_000)
  t.equal(exit.code, 0, exit.stderr)
  t.match(JSON.parse(exit.stdout.trim()), { ran: 'ok' })
})
