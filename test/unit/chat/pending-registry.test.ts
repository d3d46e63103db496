import t from 'tap'
import { SimulatedClock } from 'xstate'
import {
  createPendingRegistry,
  type PendingRegistryOptions,
  type Settlement
} from '../../../src/chat/pending-registry.js'
import type { Clock } from '../../../src/clock.js'
import type { ReplyEnvelope } from '../../../src/mqtt/protocol.js'
import { seeded } from '../../fixtures/seeded-random.js'

/** The part of a tap test the helpers below need. */
interface Scope {
  teardown (fn: () => unknown): void
}

/**
 * XState's SimulatedClock, counting the timers still armed (set, minus cleared, minus fired),
 * so a test can say that nothing was left ticking.
 */
class CountingClock implements Clock {
  private readonly sim = new SimulatedClock()
  private readonly live = new Set<unknown>()
  set = 0
  cleared = 0
  fired = 0

  now = (): number => this.sim.now()

  setTimeout = (fn: () => void, ms: number): unknown => {
    const handle: unknown = this.sim.setTimeout(() => {
      if (this.live.delete(handle)) this.fired++
      fn()
    }, ms)
    this.live.add(handle)
    this.set++
    return handle
  }

  clearTimeout = (handle: unknown): void => {
    if (this.live.delete(handle)) this.cleared++
    this.sim.clearTimeout(handle as number)
  }

  /** Moves time forward by `ms`; every timer due by then fires, in order. */
  advance (ms: number): void { this.sim.increment(ms) }

  get liveTimers (): number { return this.live.size }
}

const chunk = (id: string, delta: string): ReplyEnvelope => ({ v: 1, request_id: id, type: 'chunk', delta })
const done = (id: string, content: string): ReplyEnvelope => ({ v: 1, request_id: id, type: 'done', content })
const error = (id: string, message: string): ReplyEnvelope => ({ v: 1, request_id: id, type: 'error', error: message })

interface Opened { settles: Settlement[], chunks: string[] }

function makeRegistry (t: Scope, options: Partial<PendingRegistryOptions> = {}) {
  const clock = new CountingClock()
  const settled: Settlement[] = []
  const registry = createPendingRegistry({
    maxPending: 100,
    maxPendingPerSession: 10,
    clock,
    onSettled: (s) => { settled.push(s) },
    ...options
  })
  // Settling is the only way an entry leaves: shutting down whatever a test left open stops its actor.
  t.teardown(() => { registry.failAll('shutdown') })
  const open = (requestId: string, sessionId = 'session-a', timeoutMs = 1_000): Opened => {
    const o: Opened = { settles: [], chunks: [] }
    registry.open(requestId, sessionId, timeoutMs, {
      onChunk: (delta) => { o.chunks.push(delta) },
      onSettle: (s) => { o.settles.push(s) }
    })
    return o
  }
  return { registry, clock, settled, open }
}

t.test('admit answers total_cap at maxPending and ok again once one settles', async (t) => {
  const { registry, open } = makeRegistry(t, { maxPending: 3, maxPendingPerSession: 10 })
  t.equal(registry.admit('s1'), 'ok')
  open('r1', 's1')
  open('r2', 's2')
  t.equal(registry.admit('s3'), 'ok')
  open('r3', 's3')
  t.equal(registry.admit('s1'), 'total_cap')
  t.equal(registry.admit('a-new-session'), 'total_cap', 'a session with nothing in flight is still refused')

  t.equal(registry.deliver(done('r2', 'x')), 'delivered')
  t.equal(registry.admit('s1'), 'ok')
})

t.test('admit answers session_cap at maxPendingPerSession, for that session only', async (t) => {
  const { registry, open, clock } = makeRegistry(t, { maxPending: 100, maxPendingPerSession: 2 })
  open('r1', 'busy')
  t.equal(registry.admit('busy'), 'ok')
  open('r2', 'busy')
  t.equal(registry.admit('busy'), 'session_cap')
  t.equal(registry.admit('quiet'), 'ok', 'other sessions are not affected')

  clock.advance(1_000)
  t.equal(registry.admit('busy'), 'ok', 'a timeout frees the slot too')
})

t.test('the total cap is reported before the session cap', async (t) => {
  const { registry, open } = makeRegistry(t, { maxPending: 2, maxPendingPerSession: 2 })
  open('r1', 's')
  open('r2', 's')
  t.equal(registry.admit('s'), 'total_cap')
})

t.test('every way a request settles gives its cap slot back', async (t) => {
  const { registry, open, clock } = makeRegistry(t, { maxPending: 1, maxPendingPerSession: 1 })
  const ways: Array<[string, (id: string) => void]> = [
    ['done', (id) => { registry.deliver(done(id, 'x')) }],
    ['worker error', (id) => { registry.deliver(error(id, 'x')) }],
    ['cancel', (id) => { registry.cancel(id) }],
    ['link down', () => { registry.failAll('link_down') }],
    ['shutdown', () => { registry.failAll('shutdown') }],
    ['deadline', () => { clock.advance(1_000) }]
  ]
  for (const [name, settle] of ways) {
    t.equal(registry.admit('s'), 'ok', `before ${name}`)
    open(name.replace(' ', '-'), 's')
    t.equal(registry.admit('s'), 'total_cap')
    settle(name.replace(' ', '-'))
    t.equal(registry.size, 0, `${name} frees the entry`)
  }
  t.equal(registry.admit('s'), 'ok')
})

t.test('deliver routes chunks, then done, to their request', async (t) => {
  const { registry, open, clock } = makeRegistry(t)
  const a = open('a')
  const b = open('b')
  clock.advance(40)
  t.equal(registry.deliver(chunk('a', 'Hel')), 'delivered')
  t.equal(registry.deliver(chunk('b', 'other')), 'delivered')
  t.equal(registry.deliver(chunk('a', 'lo')), 'delivered')
  t.same(a.chunks, ['Hel', 'lo'])
  t.same(b.chunks, ['other'])
  t.same(a.settles, [])

  t.equal(registry.deliver(done('a', 'Hello')), 'delivered')
  t.same(a.settles, [{
    requestId: 'a',
    sessionId: 'session-a',
    outcome: 'done',
    cause: null,
    cancelReason: null,
    text: 'Hello',
    partial: 'Hello',
    chunks: 2,
    startedAt: 0,
    settledAt: 40
  }])
  t.same(b.settles, [], 'the other request is untouched')
  t.equal(registry.size, 1)
})

t.test('deliver routes a worker error as failed with cause worker_error', async (t) => {
  const { registry, open } = makeRegistry(t)
  const a = open('a')
  t.equal(registry.deliver(error('a', 'CUDA out of memory')), 'delivered')
  t.equal(a.settles.length, 1)
  t.match(a.settles[0], { outcome: 'failed', cause: 'worker_error', text: 'CUDA out of memory' })
})

t.test('a request without onChunk ignores chunks and still settles', async (t) => {
  const { registry } = makeRegistry(t)
  const settles: Settlement[] = []
  registry.open('a', 's', 1_000, { onSettle: (s) => { settles.push(s) } })
  t.equal(registry.deliver(chunk('a', 'x')), 'delivered')
  t.equal(registry.deliver(done('a', 'x')), 'delivered')
  t.equal(settles.length, 1)
})

t.test('a reply after settlement is a duplicate and a never-seen id is unknown', async (t) => {
  const { registry, open, clock } = makeRegistry(t)
  const a = open('a')
  const b = open('b')
  const c = open('c')
  registry.deliver(done('a', 'x'))
  registry.cancel('b')
  clock.advance(1_000)
  t.equal(c.settles[0]?.outcome, 'timedOut')

  for (const id of ['a', 'b', 'c']) {
    t.equal(registry.deliver(chunk(id, 'late')), 'duplicate', `late chunk for ${id}`)
    t.equal(registry.deliver(done(id, 'late')), 'duplicate', `late done for ${id}`)
    t.equal(registry.deliver(error(id, 'late')), 'duplicate', `late error for ${id}`)
  }
  t.equal(registry.deliver(done('never-asked', 'x')), 'unknown')
  t.equal(a.settles.length + b.settles.length + c.settles.length, 3, 'late replies call nothing')
  t.same([...a.chunks, ...b.chunks, ...c.chunks], [])
})

t.test('a settled id older than recentCapacity is unknown', async (t) => {
  const { registry, open } = makeRegistry(t, { recentCapacity: 2 })
  for (const id of ['a', 'b', 'c']) {
    open(id)
    registry.deliver(done(id, 'x'))
  }
  t.equal(registry.deliver(done('a', 'late')), 'unknown', 'a fell out of memory')
  t.equal(registry.deliver(done('b', 'late')), 'duplicate')
  t.equal(registry.deliver(done('c', 'late')), 'duplicate')
})

t.test('cancel settles the request as cancelled and is false for ids not in flight', async (t) => {
  const { registry, open, clock } = makeRegistry(t)
  const a = open('a')
  clock.advance(10)
  t.equal(registry.cancel('a'), true)
  t.match(a.settles, [{ outcome: 'cancelled', cause: null, settledAt: 10 }])
  t.equal(registry.size, 0)
  t.equal(registry.cancel('a'), false, 'a second cancel finds nothing')
  t.equal(registry.cancel('never-seen'), false)
  t.equal(a.settles.length, 1)
  clock.advance(1_000)
  t.equal(a.settles.length, 1, 'the deadline died with the request')
})

t.test('failAll fails every request in flight with the cause and says how many', async (t) => {
  for (const cause of ['link_down', 'shutdown'] as const) {
    t.test(cause, async (t) => {
      const { registry, open, settled, clock } = makeRegistry(t)
      const a = open('a', 's1')
      const b = open('b', 's2')
      registry.deliver(chunk('b', 'half'))
      const c = open('c', 's1')
      registry.deliver(done('c', 'finished first'))

      t.equal(registry.failAll(cause), 2)
      for (const o of [a, b]) t.match(o.settles, [{ outcome: 'failed', cause, text: null }])
      t.equal(c.settles[0]?.outcome, 'done')
      t.equal(registry.size, 0)
      t.equal(settled.length, 3, 'onSettled hears every settlement')
      t.equal(registry.failAll(cause), 0, 'nothing left to fail')
      t.equal(clock.liveTimers, 0)
    })
  }
})

t.test('a deadline settles as timedOut exactly at startedAt + timeout', async (t) => {
  const { registry, open, clock } = makeRegistry(t)
  clock.advance(5)
  const a = open('a', 's', 300)
  registry.deliver(chunk('a', 'slow'))
  clock.advance(299)
  t.same(a.settles, [])
  clock.advance(1)
  t.same(a.settles, [{
    requestId: 'a',
    sessionId: 's',
    outcome: 'timedOut',
    cause: null,
    cancelReason: null,
    text: null,
    partial: 'slow',
    chunks: 1,
    startedAt: 5,
    settledAt: 305
  }])
})

t.test('inFlightSince is the oldest open request start, and null when none', async (t) => {
  const { registry, open, clock } = makeRegistry(t)
  t.equal(registry.inFlightSince(), null)
  open('a', 's', 10_000)
  clock.advance(10)
  open('b', 's', 10_000)
  clock.advance(10)
  open('c', 's', 10_000)
  t.equal(registry.inFlightSince(), 0)

  registry.deliver(done('a', 'x'))
  t.equal(registry.inFlightSince(), 10, 'the next oldest once the oldest settles')
  registry.cancel('c')
  t.equal(registry.inFlightSince(), 10, 'settling a younger one changes nothing')
  clock.advance(10)
  open('d', 's', 10_000)
  registry.deliver(error('b', 'x'))
  t.equal(registry.inFlightSince(), 30)
  registry.failAll('link_down')
  t.equal(registry.inFlightSince(), null)
})

t.test('whenEmpty resolves at once with nothing in flight', async (t) => {
  const { registry } = makeRegistry(t)
  await registry.whenEmpty()
  t.pass('resolved')
})

t.test('whenEmpty resolves when the last request settles, not before', async (t) => {
  const { registry, open, clock } = makeRegistry(t)
  open('a', 's', 100)
  open('b', 's', 1_000)
  let resolved = 0
  const waits = [registry.whenEmpty(), registry.whenEmpty()].map(async (p) => { await p; resolved++ })
  // Let any already-resolved promise run its continuation: a turn of the event loop, not a sleep.
  const turn = async (): Promise<void> => { await new Promise<void>((resolve) => { setImmediate(resolve) }) }

  clock.advance(100)
  await turn()
  t.equal(registry.size, 1)
  t.equal(resolved, 0, 'one request still in flight')

  registry.deliver(done('b', 'x'))
  await Promise.all(waits)
  t.equal(resolved, 2, 'every waiter is told')
})

t.test('bySession and countForSession count the requests in flight per session', async (t) => {
  const { registry, open } = makeRegistry(t)
  t.same(registry.bySession(), {})
  open('a1', 'alice')
  open('a2', 'alice')
  open('b1', 'bob')
  t.same(registry.bySession(), { alice: 2, bob: 1 })
  t.equal(registry.countForSession('alice'), 2)
  t.equal(registry.countForSession('carol'), 0)

  registry.deliver(done('b1', 'x'))
  t.same(registry.bySession(), { alice: 2 }, 'a session with nothing in flight disappears')
  registry.cancel('a1')
  t.same(registry.bySession(), { alice: 1 })
  registry.failAll('shutdown')
  t.same(registry.bySession(), {})
  t.equal(registry.countForSession('alice'), 0)
})

t.test('onSettled sees the same settlement as the request callback', async (t) => {
  const { registry, open, settled } = makeRegistry(t)
  const a = open('a')
  registry.deliver(done('a', 'x'))
  t.equal(settled.length, 1)
  t.same(settled[0], a.settles[0])
})

t.test('a request opened from inside a settlement callback is tracked', async (t) => {
  const { registry, clock } = makeRegistry(t)
  const outcomes: string[] = []
  registry.open('first', 's', 100, {
    onSettle: (s) => {
      outcomes.push(`${s.requestId}:${s.outcome}`)
      registry.open('retry', 's', 100, { onSettle: (r) => { outcomes.push(`${r.requestId}:${r.outcome}`) } })
    }
  })
  let emptied = false
  void registry.whenEmpty().then(() => { emptied = true })
  clock.advance(100)
  t.same(outcomes, ['first:timedOut'])
  t.equal(registry.size, 1)
  t.equal(registry.inFlightSince(), 100)
  await new Promise<void>((resolve) => { setImmediate(resolve) })
  t.equal(emptied, false, 'not empty: the retry is in flight')
  clock.advance(100)
  t.same(outcomes, ['first:timedOut', 'retry:timedOut'])
  await registry.whenEmpty()
  t.equal(clock.liveTimers, 0)
})


type Fate = 'done' | 'chunked' | 'error' | 'abort' | 'timeout'
type Expected = 'done' | 'worker_error' | 'cancelled' | 'timedOut' | 'link_down'

/** Within one millisecond: deadlines fire first (clock), then replies and cancels, then link drops, then new requests. */
const PHASE = { deadline: 0, action: 1, drop: 2, open: 3 } as const
const key = (at: number, phase: number): number => at * 4 + phase

/** A reply or cancel the test performs at `at`, and what the registry must answer. */
interface Action { id: string, at: number, run: () => string, want: string }

t.test('10,000 requests mixing replies, timeouts, aborts and link drops leave the registry, timers and callbacks at zero', async (t) => {
  const N = 10_000
  const SESSIONS = 300
  const rand = seeded(0x7e7e)
  const pick = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1))

  // Caps out of the way (they have their own tests); remember every id to tell late replies apart.
  const { registry, clock } = makeRegistry(t, { maxPending: N, maxPendingPerSession: N, recentCapacity: N })

  const drops = new Set<number>()
  while (drops.size < 6) drops.add(pick(200, N - 200))
  const dropTimes = [...drops].sort((a, b) => a - b)

  // The plan: request i opens at t = i ms, in session s, with a deadline and a fate.
  interface Plan {
    id: string
    session: string
    startedAt: number
    timeoutMs: number
    fate: Fate
    chunks: Array<{ at: number, delta: string }>
    endAt: number | null
    expected: Expected
    expectedChunks: string[]
  }
  const plans: Plan[] = []
  const agenda = new Map<number, Action[]>()
  const schedule = (a: Action): void => {
    const list = agenda.get(a.at)
    if (list === undefined) agenda.set(a.at, [a])
    else list.push(a)
  }
  const tally: Record<string, number> = { done: 0, chunked: 0, error: 0, abort: 0, timeout: 0, lateReplies: 0, ghosts: 0 }

  for (let i = 0; i < N; i++) {
    const id = `req-${i}`
    const startedAt = i
    const timeoutMs = pick(100, 300)
    const deadlineAt = startedAt + timeoutMs
    const r = rand()
    const fate: Fate = r < 0.3 ? 'done' : r < 0.5 ? 'chunked' : r < 0.65 ? 'error' : r < 0.8 ? 'abort' : 'timeout'
    tally[fate]!++
    const plan: Plan = {
      id,
      session: `s-${pick(0, SESSIONS - 1)}`,
      startedAt,
      timeoutMs,
      fate,
      chunks: [],
      endAt: fate === 'timeout' ? null : startedAt + pick(1, timeoutMs - 1),
      expected: 'timedOut',
      expectedChunks: []
    }
    if (fate === 'chunked') {
      const end = plan.endAt!
      const n = Math.min(pick(1, 3), end - startedAt - 1)
      let at = startedAt
      for (let c = 0; c < n; c++) {
        at = pick(at + 1, end - (n - c))
        plan.chunks.push({ at, delta: `${id}#${c}` })
      }
    }

    // What must happen: the first of deadline, the planned ending and a link drop wins.
    const drop = dropTimes.find((d) => d > startedAt)
    const candidates: Array<[number, Expected]> = [[key(deadlineAt, PHASE.deadline), 'timedOut']]
    if (plan.endAt !== null) {
      const byFate = { done: 'done', chunked: 'done', error: 'worker_error', abort: 'cancelled' } as const
      candidates.push([key(plan.endAt, PHASE.action), byFate[fate as keyof typeof byFate]])
    }
    if (drop !== undefined) candidates.push([key(drop, PHASE.drop), 'link_down'])
    candidates.sort((a, b) => a[0] - b[0])
    const [winnerKey, expected] = candidates[0]!
    plan.expected = expected
    plan.expectedChunks = plan.chunks.filter((c) => key(c.at, PHASE.action) < winnerKey).map((c) => c.delta)
    plans.push(plan)

    // The winning action itself is live: it is what settles the request.
    const isLive = (at: number): boolean => key(at, PHASE.action) <= winnerKey
    for (const c of plan.chunks) {
      schedule({ id, at: c.at, run: () => registry.deliver(chunk(id, c.delta)), want: isLive(c.at) ? 'delivered' : 'duplicate' })
    }
    if (plan.endAt !== null) {
      const at = plan.endAt
      const live = isLive(at)
      if (fate === 'abort') {
        schedule({ id, at, run: () => String(registry.cancel(id)), want: String(live) })
      } else {
        const reply = fate === 'error' ? error(id, `worker failed ${id}`) : done(id, `answer ${id}`)
        schedule({ id, at, run: () => registry.deliver(reply), want: live ? 'delivered' : 'duplicate' })
      }
    } else if (rand() < 0.5) {
      // A worker that answers after the gateway gave up.
      tally.lateReplies!++
      schedule({ id, at: deadlineAt + pick(0, 50), run: () => registry.deliver(done(id, 'too late')), want: 'duplicate' })
    }
    if (rand() < 0.02) {
      // Someone else's reply on our topic.
      tally.ghosts!++
      schedule({ id: `ghost-${i}`, at: startedAt + pick(0, 300), run: () => registry.deliver(done(`ghost-${i}`, '?')), want: 'unknown' })
    }
  }

  const byId = new Map(plans.map((p) => [p.id, p]))
  const settleCalls = new Map<string, Settlement[]>()
  const chunksSeen = new Map<string, string[]>()
  const wrongAnswers: string[] = []
  const invariantBreaks: string[] = []
  let dropped = 0

  const lastAt = Math.max(...agenda.keys(), N + 300) + 1
  const started = performance.now()
  for (let now = 0; now <= lastAt; now++) {
    if (now > 0) clock.advance(1)

    for (const a of agenda.get(now) ?? []) {
      const got = a.run()
      if (got !== a.want) wrongAnswers.push(`${a.id} at ${now}: got ${got}, want ${a.want}`)
    }
    if (drops.has(now)) {
      const inFlight = registry.size
      const failed = registry.failAll('link_down')
      dropped += failed
      if (failed !== inFlight || registry.size !== 0) invariantBreaks.push(`failAll at ${now} failed ${failed} of ${inFlight}`)
    }
    if (now < N) {
      const p = plans[now]!
      const admission = registry.admit(p.session)
      if (admission !== 'ok') invariantBreaks.push(`admit ${p.id}: ${admission}`)
      settleCalls.set(p.id, [])
      chunksSeen.set(p.id, [])
      registry.open(p.id, p.session, p.timeoutMs, {
        onChunk: (delta) => { chunksSeen.get(p.id)!.push(delta) },
        onSettle: (s) => { settleCalls.get(p.id)!.push(s) }
      })
    }

    // Every request in flight holds exactly one timer (its deadline), and nothing else does.
    if (clock.liveTimers !== registry.size) invariantBreaks.push(`at ${now}: ${clock.liveTimers} timers for ${registry.size} requests`)
    if (now % 101 === 0) {
      const perSession = Object.values(registry.bySession()).reduce((a, b) => a + b, 0)
      if (perSession !== registry.size) invariantBreaks.push(`at ${now}: bySession sums to ${perSession}, size ${registry.size}`)
      let oldest: number | null = null
      for (const [id, calls] of settleCalls) {
        if (calls.length === 0) { oldest = byId.get(id)!.startedAt; break }
      }
      if (registry.inFlightSince() !== oldest) invariantBreaks.push(`at ${now}: inFlightSince ${registry.inFlightSince()}, oldest open ${oldest}`)
    }
  }
  const elapsedMs = performance.now() - started
  t.comment(`${N} requests over ${lastAt} simulated ms in ${elapsedMs.toFixed(0)} ms; ${JSON.stringify(tally)}; ${dropped} failed by ${dropTimes.length} link drops`)

  t.same(wrongAnswers, [], 'every deliver and cancel answered as the plan says')
  t.same(invariantBreaks, [], 'timers, sessions and inFlightSince tracked the requests all along')

  const counts: Record<string, number> = {}
  const expectedCounts: Record<string, number> = {}
  const mismatches: string[] = []
  for (const p of plans) {
    expectedCounts[p.expected] = (expectedCounts[p.expected] ?? 0) + 1
    const calls = settleCalls.get(p.id)!
    if (calls.length !== 1) { mismatches.push(`${p.id}: settled ${calls.length} times`); continue }
    const s = calls[0]!
    const got = (s.outcome === 'failed' ? s.cause : s.outcome) as Expected
    counts[got] = (counts[got] ?? 0) + 1
    if (got !== p.expected) mismatches.push(`${p.id}: ${got}, want ${p.expected}`)
    if (s.sessionId !== p.session || s.startedAt !== p.startedAt) mismatches.push(`${p.id}: wrong settlement ${JSON.stringify(s)}`)
    if (got === 'timedOut' && s.settledAt !== p.startedAt + p.timeoutMs) mismatches.push(`${p.id}: timed out at ${s.settledAt}`)
    if (got === 'done' && s.text !== `answer ${p.id}`) mismatches.push(`${p.id}: text ${s.text}`)
    if (got === 'worker_error' && s.text !== `worker failed ${p.id}`) mismatches.push(`${p.id}: error text ${s.text}`)
    const seen = chunksSeen.get(p.id)!
    if (seen.join('|') !== p.expectedChunks.join('|')) mismatches.push(`${p.id}: chunks ${seen.join('|')}, want ${p.expectedChunks.join('|')}`)
  }
  t.same(mismatches.slice(0, 20), [], 'each request settled once, as planned, with its own chunks')
  t.same(counts, expectedCounts, 'outcome counts')
  for (const outcome of ['done', 'worker_error', 'cancelled', 'timedOut', 'link_down']) {
    t.ok((counts[outcome] ?? 0) > 50, `the mix has ${counts[outcome]} ${outcome}`)
  }
  t.equal(dropped, counts.link_down, 'failAll counted exactly the link_down settlements')

  // Back to zero.
  t.equal(registry.size, 0, 'no request left')
  t.same(registry.bySession(), {}, 'no session left')
  t.equal(registry.inFlightSince(), null)
  t.equal(clock.liveTimers, 0, 'no timer left armed')
  t.equal(clock.set, clock.cleared + clock.fired, 'every timer set was either cleared or fired')
  await registry.whenEmpty()

  // The actors are gone: nothing reaches them, nothing calls back.
  const settledBefore = [...settleCalls.values()].reduce((n, c) => n + c.length, 0)
  const chunksBefore = [...chunksSeen.values()].reduce((n, c) => n + c.length, 0)
  const answers = new Set<string>()
  for (const p of plans) {
    answers.add(registry.deliver(chunk(p.id, 'ghost')))
    answers.add(registry.deliver(done(p.id, 'ghost')))
    answers.add(String(registry.cancel(p.id)))
  }
  t.same([...answers].sort(), ['duplicate', 'false'], 'every id is remembered as settled and none is in flight')
  t.equal(registry.failAll('link_down'), 0)
  clock.advance(3_600_000)
  t.equal([...settleCalls.values()].reduce((n, c) => n + c.length, 0), settledBefore, 'no callback after settlement')
  t.equal([...chunksSeen.values()].reduce((n, c) => n + c.length, 0), chunksBefore)
  t.equal(clock.liveTimers, 0)
  t.equal(registry.size, 0)
})

t.test('a chunk redelivered with a seq already seen reaches the client once; chunks are numbered 1, 2, 3 for it', async (t) => {
  const { registry, clock } = makeRegistry(t)
  const seen: Array<[string, number]> = []
  registry.open('a', 's', 1_000, { onChunk: (delta, seq) => { seen.push([delta, seq]) }, onSettle: () => {} })
  clock.advance(1)
  t.equal(registry.deliver({ v: 1, request_id: 'a', type: 'chunk', delta: 'x', seq: 1 }), 'delivered')
  t.equal(registry.deliver({ v: 1, request_id: 'a', type: 'chunk', delta: 'x', seq: 1 }), 'duplicate', 'a QoS 1 redelivery')
  t.equal(registry.deliver({ v: 1, request_id: 'a', type: 'chunk', delta: 'y', seq: 2 }), 'delivered')
  t.equal(registry.deliver({ v: 1, request_id: 'a', type: 'chunk', delta: 'z' }), 'delivered', 'a chunk without seq (a v1 worker) is numbered by arrival')
  t.same(seen, [['x', 1], ['y', 2], ['z', 3]])
})

t.test('a stream that goes silent for idleTimeoutMs after a chunk settles as stalled, on the clock', async (t) => {
  const { registry, open, clock } = makeRegistry(t, { idleTimeoutMs: 100 })
  const a = open('a', 's', 10_000)
  clock.advance(5_000)
  t.same(a.settles, [], 'no idle bound before the first chunk (first-chunk bound off)')
  registry.deliver(chunk('a', 'one'))
  clock.advance(90)
  registry.deliver(chunk('a', 'two'))
  clock.advance(90)
  t.same(a.settles, [], 'each chunk moves the bound')
  clock.advance(10)
  t.match(a.settles, [{ outcome: 'stalled', partial: 'onetwo', chunks: 2, settledAt: 5_190 }])
  t.equal(registry.size, 0)
  t.equal(clock.liveTimers, 0, 'no timer left behind')
})

t.test('the first-chunk bound settles a request that never starts answering as stalled', async (t) => {
  const { registry, open, clock } = makeRegistry(t, { firstChunkTimeoutMs: 300, idleTimeoutMs: 1_000 })
  const a = open('a', 's', 10_000)
  clock.advance(300)
  t.match(a.settles, [{ outcome: 'stalled', chunks: 0 }])
  t.equal(registry.size, 0)
})

t.test('a detached request is cancelled as client_gone when the grace runs out, and kept when its client is back', async (t) => {
  const { registry, open, clock } = makeRegistry(t, { resumeGraceMs: 500 })
  const gone = open('gone', 's', 10_000)
  const back = open('back', 's', 10_000)
  t.ok(registry.detach('gone'))
  t.ok(registry.detach('back'))
  clock.advance(400)
  t.ok(registry.attach('back'))
  clock.advance(100)
  t.match(gone.settles, [{ outcome: 'cancelled', cancelReason: 'client_gone', settledAt: 500 }])
  t.same(back.settles, [])
  registry.deliver(done('back', 'ok'))
  t.match(back.settles, [{ outcome: 'done' }])
  t.equal(clock.liveTimers, 0, 'no timer left behind')
  t.notOk(registry.detach('gone'), 'a settled request cannot be detached')
})

t.test('cancel tells Stop from a client that left', async (t) => {
  const { registry, open } = makeRegistry(t)
  const stop = open('stop')
  const left = open('left')
  registry.cancel('stop', 'client_cancelled')
  registry.cancel('left')
  t.match(stop.settles, [{ outcome: 'cancelled', cancelReason: 'client_cancelled' }])
  t.match(left.settles, [{ outcome: 'cancelled', cancelReason: 'client_gone' }])
})
