import t from 'tap'
import { keepNewestWithin, trimToBytes, trimToChars } from '../../../src/chat/history-budget.js'
import type { HistoryTurn } from '../../../src/mqtt/protocol.js'

const turn = (role: 'user' | 'assistant', content: string): HistoryTurn => ({ role, content })

// Oldest first, as beginChat returns it: 3 + 4 + 5 + 6 characters.
const HISTORY: HistoryTurn[] = [
  turn('user', 'aaa'),
  turn('assistant', 'bbbb'),
  turn('user', 'ccccc'),
  turn('assistant', 'dddddd')
]

t.test('trimToChars keeps the newest turns that fit the budget, oldest first', async (t) => {
  t.same(trimToChars(HISTORY, 11), HISTORY.slice(2), '5 + 6 fit in 11')
  t.same(trimToChars(HISTORY, 14), HISTORY.slice(2), '4 more would make 15')
  t.same(trimToChars(HISTORY, 15), HISTORY.slice(1), 'exactly the budget fits')
  t.same(trimToChars(HISTORY, 6), HISTORY.slice(3), 'only the newest')
})

t.test('trimToChars keeps nothing when the budget is 0', async (t) => {
  t.same(trimToChars(HISTORY, 0), [])
})

t.test('trimToChars keeps everything when the budget is large', async (t) => {
  t.same(trimToChars(HISTORY, 18), HISTORY, 'exactly the total')
  t.same(trimToChars(HISTORY, 1_000_000), HISTORY)
  t.same(trimToChars([], 100), [], 'empty history')
})

t.test('trimToChars keeps a contiguous run of the newest turns: a long newer turn is not skipped for older short ones', async (t) => {
  const history = [turn('user', 'a'), turn('assistant', 'b'), turn('user', 'x'.repeat(100))]
  t.same(trimToChars(history, 10), [], 'the newest does not fit, so nothing older is kept')
  const middle = [turn('user', 'a'), turn('assistant', 'x'.repeat(100)), turn('user', 'b')]
  t.same(trimToChars(middle, 10), [turn('user', 'b')])
})

t.test('trimToChars counts empty turns as free and does not change its input', async (t) => {
  const history = [turn('user', ''), turn('assistant', 'abc')]
  const copy = structuredClone(history)
  t.same(trimToChars(history, 3), history)
  t.same(history, copy, 'input untouched')
})

t.test('trimToBytes keeps the newest turns whose UTF-8 size fits, dropping from the oldest', async (t) => {
  const history = [turn('user', 'abcd'), turn('assistant', '€'), turn('user', 'xy')]
  t.same(trimToBytes(history, 5), history.slice(1), '€ is 3 bytes, xy 2')
  t.same(trimToBytes(history, 4), history.slice(2))
  t.same(trimToBytes(history, 9), history)
  t.same(trimToBytes(history, 0), [])
})

t.test('a cost that stops counting early (false) ends the kept run there, and the cost sees what remains', async (t) => {
  const seen: Array<[string, number, number]> = []
  const { kept, used } = keepNewestWithin(HISTORY, 12, (x, remaining, index) => {
    seen.push([x.content, remaining, index])
    return x.content.length > remaining ? false : x.content.length
  })
  t.same(kept, HISTORY.slice(2))
  t.equal(used, 11)
  t.same(seen, [['dddddd', 12, 3], ['ccccc', 6, 2], ['bbbb', 1, 1]])
})
