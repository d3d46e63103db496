import t from 'tap'
import { createRecentIds } from '../../../src/chat/recent-ids.js'

t.test('remembers what was added and nothing else', async (t) => {
  const recent = createRecentIds(4)
  t.equal(recent.size, 0)
  recent.add('a')
  recent.add('b')
  t.ok(recent.has('a'))
  t.ok(recent.has('b'))
  t.notOk(recent.has('c'))
  t.equal(recent.size, 2)
})

t.test('after capacity + N adds the N oldest are forgotten and size stays at capacity', async (t) => {
  const capacity = 100
  const extra = 37
  const recent = createRecentIds(capacity)
  for (let i = 0; i < capacity + extra; i++) {
    recent.add(`id-${i}`)
    t.equal(recent.size, Math.min(i + 1, capacity), `size after ${i + 1} adds`)
  }
  for (let i = 0; i < extra; i++) t.notOk(recent.has(`id-${i}`), `id-${i} is forgotten`)
  for (let i = extra; i < capacity + extra; i++) t.ok(recent.has(`id-${i}`), `id-${i} is remembered`)
})

t.test('memory stays bounded over many laps of the ring', async (t) => {
  const capacity = 1_000
  const recent = createRecentIds(capacity)
  const total = 50 * capacity + 123
  for (let i = 0; i < total; i++) recent.add(`id-${i}`)
  t.equal(recent.size, capacity)
  t.notOk(recent.has(`id-${total - capacity - 1}`), 'the one just past the window is gone')
  t.ok(recent.has(`id-${total - capacity}`), 'the oldest in the window is kept')
  t.ok(recent.has(`id-${total - 1}`), 'the newest is kept')
})

t.test('adding an id it already holds changes nothing', async (t) => {
  const recent = createRecentIds(3)
  recent.add('a')
  recent.add('b')
  recent.add('a')
  t.equal(recent.size, 2, 'no second slot for a repeat')
  recent.add('c')
  recent.add('d')
  t.notOk(recent.has('a'), 'a keeps its original age and leaves first')
  t.ok(recent.has('b'))
  t.ok(recent.has('c'))
  t.ok(recent.has('d'))
  t.equal(recent.size, 3)
})

t.test('a forgotten id can be remembered again', async (t) => {
  const recent = createRecentIds(2)
  recent.add('a')
  recent.add('b')
  recent.add('c')
  t.notOk(recent.has('a'))
  recent.add('a')
  t.ok(recent.has('a'))
  t.notOk(recent.has('b'))
  t.equal(recent.size, 2)
})

t.test('a capacity of one remembers only the last id', async (t) => {
  const recent = createRecentIds(1)
  for (const id of ['a', 'b', 'c']) recent.add(id)
  t.equal(recent.size, 1)
  t.ok(recent.has('c'))
  t.notOk(recent.has('b'))
})

t.test('a capacity of zero remembers nothing (or is refused up front)', async (t) => {
  let recent
  try {
    recent = createRecentIds(0)
  } catch (err) {
    t.type(err, RangeError, 'refusing is fine too')
    return
  }
  for (const id of ['a', 'b', 'c']) recent.add(id)
  t.equal(recent.size, 0)
  t.notOk(recent.has('a'), 'the first id is not stuck in the ring')
  t.notOk(recent.has('c'))
})
