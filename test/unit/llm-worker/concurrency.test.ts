import t from 'tap'
import { createSlots } from '../../../src/llm-worker/concurrency.js'

function gated (): { run: (item: string) => Promise<void>, started: string[], release: (item: string) => Promise<void> } {
  const started: string[] = []
  const gates = new Map<string, () => void>()
  return {
    started,
    run: (item) => new Promise<void>((resolve) => { started.push(item); gates.set(item, resolve) }),
    async release (item) {
      gates.get(item)?.()
      // Let the slot's then() run.
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
}

t.test('items start at once up to the concurrency, then wait in line, then are refused', async (t) => {
  const g = gated()
  const slots = createSlots({ concurrency: 2, queue: 1, run: g.run })
  t.same(['a', 'b', 'c', 'd'].map((x) => slots.offer(x)), ['started', 'started', 'queued', 'full'])
  t.same(g.started, ['a', 'b'])
  t.equal(slots.active, 2)
  t.equal(slots.waiting, 1)
})

t.test('a finished item hands its slot to the oldest waiting one', async (t) => {
  const g = gated()
  const slots = createSlots({ concurrency: 1, queue: 5, run: g.run })
  for (const x of ['a', 'b', 'c']) slots.offer(x)
  await g.release('a')
  t.same(g.started, ['a', 'b'])
  await g.release('b')
  t.same(g.started, ['a', 'b', 'c'])
  await g.release('c')
  t.equal(slots.active, 0)
  t.equal(slots.waiting, 0)
})

t.test('a withdrawn item never starts; a running one cannot be withdrawn', async (t) => {
  const g = gated()
  const slots = createSlots({ concurrency: 1, queue: 5, run: g.run })
  for (const x of ['a', 'b', 'c']) slots.offer(x)
  t.equal(slots.withdraw('b'), true)
  t.equal(slots.withdraw('a'), false)
  t.same(slots.waitingItems(), ['c'])
  await g.release('a')
  t.same(g.started, ['a', 'c'])
})

t.test('a run that rejects still frees its slot', async (t) => {
  const started: string[] = []
  const slots = createSlots<string>({ concurrency: 1, queue: 1, run: async (x) => { started.push(x); throw new Error('boom') } })
  slots.offer('a')
  slots.offer('b')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(started, ['a', 'b'])
  t.equal(slots.active, 0)
})

t.test('a zero-length queue refuses as soon as the slots are busy', async (t) => {
  const g = gated()
  const slots = createSlots({ concurrency: 1, queue: 0, run: g.run })
  t.same([slots.offer('a'), slots.offer('b')], ['started', 'full'])
})
