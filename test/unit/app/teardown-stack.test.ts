import t from 'tap'
import { createTeardownStack } from '../../../src/app/teardown-stack.js'
import { silentLogger } from '../../../src/log.js'

t.test('unwinding undoes the steps newest first, each once', async (t) => {
  const stack = createTeardownStack(silentLogger())
  const done: string[] = []
  stack.push('database', () => { done.push('database') })
  stack.push('link', async () => { await Promise.resolve(); done.push('link') })
  stack.push('http', () => { done.push('http') })
  t.same(stack.pending, ['http', 'link', 'database'])
  await stack.unwind()
  t.same(done, ['http', 'link', 'database'])
  t.same(stack.pending, [])
  await stack.unwind()
  t.same(done, ['http', 'link', 'database'], 'a second unwind has nothing left to do')
})

t.test('a step that throws is logged by name and the rest still run', async (t) => {
  const lines: Array<{ step: string, msg: string }> = []
  const log = { error: (fields: { step: string }, msg: string) => { lines.push({ step: fields.step, msg }) } }
  const stack = createTeardownStack(log as never)
  const done: string[] = []
  stack.push('database', () => { done.push('database') })
  stack.push('broker', async () => { throw new Error('stuck') })
  stack.push('http', () => { done.push('http') })
  await stack.unwind()
  t.same(done, ['http', 'database'])
  t.equal(lines.length, 1)
  t.equal(lines[0]?.step, 'broker')
  t.match(lines[0]?.msg, /stopping broker failed/)
})
