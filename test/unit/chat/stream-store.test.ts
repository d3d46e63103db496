import t from 'tap'
import { createStreamStore, type StreamEnd, type StreamListener } from '../../../src/chat/stream-store.js'
import { createPendingRegistry } from '../../../src/chat/pending-registry.js'
import { TetherError } from '../../../src/errors.js'
import { describeFailure } from '../../../src/failure.js'
import { silentLogger } from '../../../src/log.js'
import { CountingClock } from '../../fixtures/counting-clock.js'

function setup (maxBytes = 1_000_000, cancelAnswers = true) {
  const clock = new CountingClock()
  const calls: string[] = []
  const store = createStreamStore({
    chats: {
      detach: (id) => { calls.push(`detach ${id}`); return true },
      attach: (id) => { calls.push(`attach ${id}`); return true },
      cancel: (id) => { calls.push(`cancel ${id}`); return cancelAnswers }
    },
    clock,
    retainMs: 1000,
    maxBytes,
    describe: (err) => describeFailure(err, silentLogger(), {})
  })
  return { store, clock, calls }
}

function listener () {
  const seen: string[] = []
  const ends: StreamEnd[] = []
  let replaced = 0
  const l: StreamListener = { chunk: (d, seq) => { seen.push(`${seq}:${d}`) }, end: (e) => { ends.push(e) }, replaced: () => { replaced++ } }
  return { l, seen, ends, replaced: () => replaced }
}

t.test('a chat refused before it was published leaves nothing to resume', async (t) => {
  const { store } = setup()
  const a = listener()
  const s = store.open('r', 'u', a.l)
  s.sink.fail(new TetherError('too_many_requests'))
  t.match(a.ends, [{ type: 'error', failure: { code: 'too_many_requests' } }], 'the client hears the refusal')
  t.equal(store.size, 0)
  t.equal(store.resume('r', 'u', listener().l, 0), 'not_found')
})

t.test('a finished answer counts toward the bound and is dropped with its stream', async (t) => {
  const { store, clock } = setup()
  const s = store.open('r', 'u', listener().l)
  s.sink.submitted?.()
  s.sink.chunk?.('ab', 1)
  s.sink.done({ messageId: 'm', content: 'ab', latencyMs: 1 })
  t.equal(store.bytes, 8, 'the chunk and the done content, UTF-16')
  store.start()
  clock.advance(2000)
  t.equal(store.size, 0)
  t.equal(store.bytes, 0)
  store.stop()
})

t.test('a chunk that cannot fit does not wipe the finished streams; one that can, evicts the oldest first', async (t) => {
  const { store } = setup(20)
  const old = store.open('old', 'u', listener().l)
  old.sink.submitted?.()
  old.sink.chunk?.('xxxx', 1) // 8 bytes
  old.sink.done({ messageId: 'm', content: 'x', latencyMs: 1 }) // 2 bytes
  const live = store.open('live', 'u', listener().l)
  live.sink.submitted?.()
  live.sink.chunk?.('y'.repeat(20), 1) // 40 bytes: can never fit
  t.ok(store.get('old', 'u') !== null, 'the finished stream is kept')
  t.match(store.resume('live', 'u', listener().l, 0), { result: 'not_replayable' }, 'the stream that grew past the bound cannot be replayed whole')
  const next = store.open('next', 'u', listener().l)
  next.sink.submitted?.()
  next.sink.chunk?.('z'.repeat(8), 1) // 16 bytes: fits once the old one goes
  t.equal(store.get('old', 'u'), null, 'the oldest finished stream made room')
  t.equal(store.bytes, 16)
})

t.test('a second resume takes the stream over; the first connection is told and gets nothing more', async (t) => {
  const { store } = setup()
  const first = listener()
  const s = store.open('r', 'u', first.l)
  s.sink.submitted?.()
  s.sink.chunk?.('a', 1)
  const second = listener()
  const resumed = store.resume('r', 'u', second.l, 0)
  t.not(resumed, 'not_found')
  t.equal(first.replaced(), 1)
  s.sink.chunk?.('b', 2)
  t.same(first.seen, ['1:a'])
  t.same(second.seen, ['1:a', '2:b'])
})

t.test('Stop for a chat whose end is still on its way is already_settled', async (t) => {
  const { store } = setup(1_000_000, false)
  const s = store.open('r', 'u', listener().l)
  s.sink.submitted?.()
  t.equal(s.cancel(), 'already_settled')
})

t.test('the idle bound after a longer first-chunk bound moves the stall timer earlier', async (t) => {
  const clock = new CountingClock()
  const registry = createPendingRegistry({ maxPending: 10, maxPendingPerSession: 10, clock, firstChunkTimeoutMs: 5000, idleTimeoutMs: 100 })
  const settled: string[] = []
  registry.open('r', 's', 60_000, { onSettle: (s) => { settled.push(`${s.outcome}@${s.settledAt}`) } })
  clock.advance(10)
  registry.deliver({ v: 1, request_id: 'r', type: 'chunk', delta: 'x', seq: 1 })
  clock.advance(100)
  t.same(settled, ['stalled@110'], 'stalled at the idle bound, not at the first-chunk one')
  t.equal(clock.liveTimers, 0)
})
