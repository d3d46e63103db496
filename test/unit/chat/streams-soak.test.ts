/**
 * 10,000 streams in flight at once, on simulated time, with random drops, resumes, Stops,
 * redelivered chunks, stalls and answers: every client sees each chunk of its stream once and in
 * order, every stream ends exactly once, and afterwards the registry, the replay buffers, the
 * timers and the listeners are all back to zero.
 */
import t from 'tap'
import { createPendingRegistry, type Settlement } from '../../../src/chat/pending-registry.js'
import { createStreamStore, type Stream, type StreamEnd, type StreamListener } from '../../../src/chat/stream-store.js'
import { TetherError } from '../../../src/errors.js'
import { describeFailure } from '../../../src/failure.js'
import { silentLogger } from '../../../src/log.js'
import { CountingClock } from '../../fixtures/counting-clock.js'
import { seeded } from '../../fixtures/seeded-random.js'

const N = 10_000
const IDLE_MS = 200
const GRACE_MS = 100
const DEADLINE_MS = 5_000
const RETAIN_MS = 1_000

interface Client {
  stream: Stream
  /** The chunks this user has seen, across every connection, by seq. */
  seen: string[]
  listener: StreamListener | null
  ends: StreamEnd[]
  problems: string[]
}

t.test('10,000 streams with random drops, resumes, cancels and stalls leave nothing behind', async (t) => {
  const clock = new CountingClock()
  const random = seeded(11)
  const registry = createPendingRegistry({ maxPending: N, maxPendingPerSession: N, clock, idleTimeoutMs: IDLE_MS, resumeGraceMs: GRACE_MS })
  const store = createStreamStore({
    chats: { detach: registry.detach, attach: registry.attach, cancel: (id, reason) => registry.cancel(id, reason) },
    clock,
    retainMs: RETAIN_MS,
    maxBytes: 4 * 1024 * 1024,
    describe: (err) => describeFailure(err, silentLogger(), {})
  })
  store.start()

  const clients = new Map<string, Client>()
  function listenerFor (client: Client): StreamListener {
    const listener: StreamListener = {
      chunk: (delta, seq) => {
        if (client.listener !== listener) return
        if (seq !== client.seen.length + 1) client.problems.push(`seq ${seq} after ${client.seen.length}`)
        client.seen.push(delta)
      },
      end: (end) => { client.ends.push(end) }
    }
    return listener
  }

  const settle = (client: Client, s: Settlement): void => {
    const { sink } = client.stream
    if (s.outcome === 'done') sink.done({ messageId: 'm', content: s.text ?? '', latencyMs: 0 })
    else if (s.outcome === 'cancelled' && s.cancelReason === 'client_gone') sink.abandoned?.()
    else sink.fail(new TetherError(s.outcome === 'stalled' ? 'llm_stalled' : s.outcome === 'cancelled' ? 'cancelled' : 'llm_timeout'))
  }

  const workerSeq = new Map<string, number>()
  for (let i = 0; i < N; i++) {
    const id = `r${i}`
    const client: Client = { stream: null as unknown as Stream, seen: [], listener: null, ends: [], problems: [] }
    const listener = listenerFor(client)
    client.listener = listener
    client.stream = store.open(id, 'u', listener)
    clients.set(id, client)
    registry.open(id, `s${i % 500}`, DEADLINE_MS, { onChunk: client.stream.sink.chunk, onSettle: (s) => { settle(client, s) } }, 'u')
    client.stream.sink.submitted?.()
    workerSeq.set(id, 0)
  }
  t.equal(registry.size, N)
  t.equal(store.size, N)

  // Each round: every live stream gets a random fate for the next 50 ms of simulated time.
  const live = (): string[] => [...clients.keys()].filter((id) => !clients.get(id)!.stream.settled)
  for (let round = 0; round < 40 && live().length > 0; round++) {
    for (const id of live()) {
      const client = clients.get(id)!
      const roll = random()
      if (roll < 0.45) {
        const seq = (workerSeq.get(id) ?? 0) + 1
        workerSeq.set(id, seq)
        registry.deliver({ v: 1, request_id: id, type: 'chunk', delta: `${id}:${seq} `, seq })
        if (random() < 0.1) registry.deliver({ v: 1, request_id: id, type: 'chunk', delta: `${id}:${seq} `, seq })
      } else if (roll < 0.55 && client.listener !== null) {
        client.stream.detach(client.listener)
        client.listener = null
      } else if (roll < 0.65 && client.listener === null) {
        const listener = listenerFor(client)
        client.listener = listener
        const result = client.stream.attach(listener, client.seen.length)
        if (result !== 'attached' && result !== 'ended') client.problems.push(`resume: ${result}`)
      } else if (roll < 0.68) {
        client.stream.cancel()
      } else if (roll < 0.73) {
        registry.deliver({ v: 1, request_id: id, type: 'done', content: client.seen.join('') })
      }
      // else: the worker stays silent this round (a stall once IDLE_MS passes)
    }
    clock.advance(50)
  }
  clock.advance(DEADLINE_MS)

  const problems = [...clients.values()].flatMap((c) => c.problems)
  t.same(problems.slice(0, 5), [], 'every client saw its chunks once and in order, across resumes')
  const endsWrong = [...clients.entries()].filter(([, c]) => c.ends.length > 1).map(([id]) => id)
  t.same(endsWrong, [], 'no stream ended twice for a client')
  const outcomes: Record<string, number> = {}
  for (const c of clients.values()) {
    const end = c.ends[0]
    const key = end === undefined ? 'abandoned' : end.type === 'done' ? 'done' : end.failure.code
    outcomes[key] = (outcomes[key] ?? 0) + 1
  }
  t.comment(JSON.stringify(outcomes))
  t.ok((outcomes.done ?? 0) > 0 && (outcomes.llm_stalled ?? 0) > 0 && (outcomes.cancelled ?? 0) > 0 && (outcomes.abandoned ?? 0) > 0, 'every kind of end happened')

  clock.advance(RETAIN_MS + 1_000)
  t.equal(registry.size, 0, 'no request in flight')
  t.equal(store.size, 0, 'no stream kept past STREAM_RETAIN_MS')
  t.equal(store.bytes, 0, 'no replay buffer')
  store.stop()
  t.equal(clock.liveTimers, 0, 'no timer armed')
})
