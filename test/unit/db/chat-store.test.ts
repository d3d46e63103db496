import t from 'tap'
import { trimHistory } from '../../../src/db/chat-store.js'
import type { HistoryTurn } from '../../../src/mqtt/protocol.js'

const turn = (role: 'user' | 'assistant', content: string): HistoryTurn => ({ role, content })

// Oldest first, as beginChat returns it: 3 + 4 + 5 + 6 characters.
const HISTORY: HistoryTurn[] = [
  turn('user', 'aaa'),
  turn('assistant', 'bbbb'),
  turn('user', 'ccccc'),
  turn('assistant', 'dddddd')
]

t.test('trimHistory keeps the newest turns that fit the budget, oldest first', async (t) => {
  t.same(trimHistory(HISTORY, 11), HISTORY.slice(2), '5 + 6 fit in 11')
  t.same(trimHistory(HISTORY, 14), HISTORY.slice(2), '4 more would make 15')
  t.same(trimHistory(HISTORY, 15), HISTORY.slice(1), 'exactly the budget fits')
  t.same(trimHistory(HISTORY, 6), HISTORY.slice(3), 'only the newest')
})

t.test('trimHistory keeps nothing when the budget is 0', async (t) => {
  t.same(trimHistory(HISTORY, 0), [])
})

t.test('trimHistory keeps everything when the budget is large', async (t) => {
  t.same(trimHistory(HISTORY, 18), HISTORY, 'exactly the total')
  t.same(trimHistory(HISTORY, 1_000_000), HISTORY)
  t.same(trimHistory([], 100), [], 'empty history')
})

t.test('trimHistory keeps a contiguous run of the newest turns: a long newer turn is not skipped for older short ones', async (t) => {
  const history = [turn('user', 'a'), turn('assistant', 'b'), turn('user', 'x'.repeat(100))]
  t.same(trimHistory(history, 10), [], 'the newest does not fit, so nothing older is kept')
  const middle = [turn('user', 'a'), turn('assistant', 'x'.repeat(100)), turn('user', 'b')]
  t.same(trimHistory(middle, 10), [turn('user', 'b')])
})

t.test('trimHistory counts empty turns as free and does not change its input', async (t) => {
  const history = [turn('user', ''), turn('assistant', 'abc')]
  const copy = structuredClone(history)
  t.same(trimHistory(history, 3), history)
  t.same(history, copy, 'input untouched')
})
