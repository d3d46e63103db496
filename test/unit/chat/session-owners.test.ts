import t from 'tap'
import { createSessionOwners } from '../../../src/chat/session-owners.js'

t.test('a remembered session answers owned for its owner and not owned for anyone else; an unknown one answers undefined', async (t) => {
  const owners = createSessionOwners(10)
  owners.remember('s1', 'alice')
  t.equal(owners.owns('alice', 's1'), true)
  t.equal(owners.owns('bob', 's1'), false)
  t.equal(owners.owns('alice', 's2'), undefined, 'unknown: ask the database')
})

t.test('past its capacity the least recently used session is forgotten, and a lookup counts as a use', async (t) => {
  const owners = createSessionOwners(3)
  owners.remember('a', 'u')
  owners.remember('b', 'u')
  owners.remember('c', 'u')
  t.equal(owners.owns('u', 'a'), true, 'a used: b is now the oldest')
  owners.remember('d', 'u')
  t.equal(owners.size, 3, 'bounded')
  t.equal(owners.owns('u', 'b'), undefined, 'b forgotten')
  t.equal(owners.owns('u', 'a'), true)
  t.equal(owners.owns('u', 'c'), true)
  t.equal(owners.owns('u', 'd'), true)
})

t.test('remembering a session again does not grow the cache', async (t) => {
  const owners = createSessionOwners(5)
  for (let i = 0; i < 100; i++) owners.remember('same', 'u')
  t.equal(owners.size, 1)
})

t.test('a capacity below one is refused', async (t) => {
  t.throws(() => createSessionOwners(0), RangeError)
  t.throws(() => createSessionOwners(1.5), RangeError)
})
