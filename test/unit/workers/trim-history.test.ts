import t from 'tap'
import { countTokens } from 'gpt-tokenizer/encoding/o200k_base'
import { silentLogger } from '../../../src/log.js'
import { createThreadPool } from '../../../src/threads/thread-pool.js'
import type { TrimHistoryOutput, TrimTurn } from '../../../workers/trim-history.worker.js'

// One pool for the file: a thread's first trim loads the o200k_base ranks (about a second).
const pool = createThreadPool({ threads: 1, maxQueue: 8, defaultTimeoutMs: 60_000, log: silentLogger() })
pool.start()
t.teardown(() => pool.stop())

const trim = (history: TrimTurn[], maxTokens: number): Promise<TrimHistoryOutput> =>
  pool.run<TrimHistoryOutput>('trim-history', { history, maxTokens })
const user = (content: string): TrimTurn => ({ role: 'user', content })
const assistant = (content: string): TrimTurn => ({ role: 'assistant', content })
const tokens = (text: string): number => countTokens(text, { disallowedSpecial: new Set() })

// Token counts pinned for o200k_base (cl100k_base counts 13 for the Russian line).
const RUSSIAN = 'Привет, как дела? Это тест.'
const RUSSIAN_TOKENS = 9

t.test('a history within the budget is kept whole, with its o200k_base token count', async (t) => {
  const history = [user('hello world'), assistant(RUSSIAN)]
  t.same(await trim(history, 1000), { history, tokens: 2 + RUSSIAN_TOKENS })
  t.same(await trim(history, 2 + RUSSIAN_TOKENS), { history, tokens: 2 + RUSSIAN_TOKENS }, 'a budget met exactly keeps everything')
})

t.test('turns are dropped from the oldest until the newest ones fit', async (t) => {
  const history = [user('first question, rather long and detailed'), assistant('first answer'), user('second question'), assistant('second answer')]
  const newestTwo = tokens('second question') + tokens('second answer')
  t.same(await trim(history, newestTwo), { history: history.slice(2), tokens: newestTwo })
  t.same(await trim(history, newestTwo - 1), { history: history.slice(3), tokens: tokens('second answer') }, 'one token short drops one more turn')
})

t.test('the kept turns are always the newest in a row: an older turn that would fit is not picked over a newer one that does not', async (t) => {
  const history = [user('ok'), assistant('a much longer answer that does not fit in the budget'), user('last')]
  const result = await trim(history, tokens('last') + tokens('ok'))
  t.same(result.history, [user('last')])
})

t.test('a budget of 0 keeps nothing but empty turns at the end', async (t) => {
  t.same(await trim([user('hi'), assistant('hello')], 0), { history: [], tokens: 0 })
  t.same(await trim([user('hi'), assistant('')], 0), { history: [assistant('')], tokens: 0 })
  t.same(await trim([], 100), { history: [], tokens: 0 })
})

t.test('special-token text such as <|endoftext|> is counted as plain text, not refused', async (t) => {
  const history = [user('say <|endoftext|> please'), assistant('<|im_start|>no')]
  const result = await trim(history, 1000)
  t.same(result.history, history)
  t.equal(result.tokens, tokens('say <|endoftext|> please') + tokens('<|im_start|>no'))
  t.ok(result.tokens > 2, 'more than one token per special-looking string')
})

t.test('a huge old turn is dropped and the newer ones kept', async (t) => {
  const huge = 'lorem ipsum dolor sit amet '.repeat(20_000)
  const history = [user(huge), assistant('short reply'), user('and a follow-up')]
  const result = await trim(history, 100)
  t.same(result.history, history.slice(1))
  t.equal(result.tokens, tokens('short reply') + tokens('and a follow-up'))
})

t.test('a text never has more o200k_base tokens than UTF-8 bytes (the trimmer skips the tokenizer on that basis)', async (t) => {
  const texts = ['a', ' ', 'hello world', RUSSIAN, 'こんにちは、世界。', '🙂🙃 emoji 👩‍👩‍👧', '\u0301\u0301\u0301', 'x'.repeat(1000), '<|endoftext|>']
  for (const text of texts) {
    const { tokens: counted } = await trim([user(text)], 1_000_000)
    t.ok(counted <= Buffer.byteLength(text, 'utf8'), `${JSON.stringify(text.slice(0, 20))}: ${counted} tokens, ${Buffer.byteLength(text, 'utf8')} bytes`)
  }
})

t.test('a malformed input is refused with a TypeError', async (t) => {
  await t.rejects(pool.run('trim-history', { history: 'nope', maxTokens: 10 }), { name: 'TypeError' })
  await t.rejects(pool.run('trim-history', { history: [], maxTokens: -1 }), { name: 'TypeError' })
  await t.rejects(pool.run('trim-history', { history: [{ role: 'user' }], maxTokens: 10 }), { name: 'TypeError' })
})
