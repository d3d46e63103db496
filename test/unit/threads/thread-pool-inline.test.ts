import t from 'tap'
import { threadId } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'
import { silentLogger } from '../../../src/log.js'
import { createThreadPool, type ThreadPoolOptions } from '../../../src/threads/thread-pool.js'
import type { SpinInput } from '../../fixtures/workers/spin.worker.js'

const spin = fileURLToPath(new URL('../../fixtures/workers/spin.worker.ts', import.meta.url))

interface Scope { teardown (fn: () => unknown): void }

function startInline (t: Scope, options: Partial<ThreadPoolOptions> = {}) {
  const pool = createThreadPool({ threads: 2, maxQueue: 4, defaultTimeoutMs: 60_000, log: silentLogger(), tasks: { spin }, inline: true, ...options })
  pool.start()
  t.teardown(() => pool.stop())
  const runSpin = (input: SpinInput, runOptions?: { timeoutMs?: number }) => pool.run<{ threadId: number }>('spin', input, runOptions)
  return { pool, runSpin }
}

t.test('inline mode runs a task on the main thread and starts no worker thread', async (t) => {
  const { pool, runSpin } = startInline(t)
  t.equal(threadId, 0, 'the test itself runs on the main thread')
  const result = await runSpin({ ms: 0 })
  t.equal(result.threadId, 0, 'the task ran on the main thread')
  t.match(pool.stats(), { threads: 0, completed: 1, queued: 0, running: 0 })
})

t.test('inline mode finds the built-in tasks in the same files as the threads do', async (t) => {
  const { pool } = startInline(t)
  const hash = await pool.run<string>('hash-password', { password: 'correct horse' })
  t.match(hash, /^scrypt\$131072\$8\$1\$/)
  t.equal(await pool.run<boolean>('verify-password', { password: 'correct horse', hash }), true)
  t.equal(await pool.run<boolean>('verify-password', { password: 'wrong horse', hash }), false)
  t.match(pool.stats(), { threads: 0, completed: 3 })
})

t.test('inline mode cannot enforce a deadline: a task past it still finishes', async (t) => {
  const { runSpin } = startInline(t)
  const result = await runSpin({ ms: 30 }, { timeoutMs: 10 })
  t.equal(result.threadId, 0)
})

t.test('inline mode passes a task\'s error to the caller and counts it', async (t) => {
  const { pool, runSpin } = startInline(t)
  await t.rejects(runSpin({ ms: 0, fail: 'bad input' }), { message: 'bad input' })
  t.match(pool.stats(), { failed: 1 })
  await t.rejects(pool.run('no-such-task', {}), TypeError)
})

t.test('inline mode keeps the lifecycle: nothing runs before start or after stop', async (t) => {
  const pool = createThreadPool({ threads: 1, maxQueue: 0, defaultTimeoutMs: 1_000, log: silentLogger(), tasks: { spin }, inline: true })
  t.teardown(() => pool.stop())
  await t.rejects(pool.run('spin', { ms: 0 }), { code: 'pool_stopped' }, 'before start')
  pool.start()
  t.equal((await pool.run<{ threadId: number }>('spin', { ms: 0 })).threadId, 0)
  await pool.stop()
  await t.rejects(pool.run('spin', { ms: 0 }), { code: 'pool_stopped' }, 'after stop')
})
