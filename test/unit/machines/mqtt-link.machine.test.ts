import t from 'tap'
import { createActor } from 'xstate'
import {
  fullJitterDelayMs,
  linkStateName,
  mqttLinkMachine,
  type LinkInput
} from '../../../machines/mqtt-link.machine.js'
import { CountingClock } from '../../fixtures/counting-clock.js'
import { seeded } from '../../fixtures/seeded-random.js'

/** The part of a tap test the helpers below need. */
interface Scope {
  teardown (fn: () => unknown): void
}


type Slot =
  | 'openConnection' | 'dropConnection' | 'closeConnection' | 'restoreSubscriptions'
  | 'sendProbe' | 'notifyUp' | 'notifyDown'

interface Call { slot: Slot, at: number, lastError: string | null, retryDelayMs: number }

const BASE_MS = 100
const CAP_MS = 30_000
const CONNECT_TIMEOUT_MS = 5_000
const PROBE_TIMEOUT_MS = 2_000

function defaults (): LinkInput {
  return {
    maxReconnectAttempts: 5,
    backoffBaseMs: BASE_MS,
    backoffCapMs: CAP_MS,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    probeTimeoutMs: PROBE_TIMEOUT_MS,
    random: () => 0.5
  }
}

/** A running link machine whose slots record what they were asked to do, and when. */
function startLink (t: Scope, input: Partial<LinkInput> = {}) {
  const clock = new CountingClock()
  const calls: Call[] = []
  /** What the staleness guard answers; flip it to make the link look silent. */
  const staleness = { looksStale: false, nextCheckMs: 1_000 }
  /** Clock readings at which the guard was evaluated. */
  const guardChecks: number[] = []
  /** Clock readings at which the check delay was computed. */
  const delayAsks: number[] = []

  const record = (slot: Slot) => ({ context }: { context: { lastError: string | null, retryDelayMs: number } }): void => {
    calls.push({ slot, at: clock.now(), lastError: context.lastError, retryDelayMs: context.retryDelayMs })
  }

  const machine = mqttLinkMachine.provide({
    actions: {
      openConnection: record('openConnection'),
      dropConnection: record('dropConnection'),
      closeConnection: record('closeConnection'),
      restoreSubscriptions: record('restoreSubscriptions'),
      sendProbe: record('sendProbe'),
      notifyUp: record('notifyUp'),
      notifyDown: record('notifyDown')
    },
    guards: {
      linkLooksStale: () => {
        guardChecks.push(clock.now())
        return staleness.looksStale
      }
    },
    delays: {
      nextStaleCheck: () => {
        delayAsks.push(clock.now())
        return staleness.nextCheckMs
      }
    }
  })
  const actor = createActor(machine, { clock, input: { ...defaults(), ...input } })
  t.teardown(() => { actor.stop() })
  actor.start()

  return {
    actor,
    clock,
    calls,
    staleness,
    guardChecks,
    delayAsks,
    state: () => linkStateName(actor.getSnapshot().value),
    value: () => actor.getSnapshot().value,
    context: () => actor.getSnapshot().context,
    /** Slots called since `from` (an index into calls), by name. */
    slotsSince: (from: number) => calls.slice(from).map((c) => c.slot),
    count: (slot: Slot) => calls.filter((c) => c.slot === slot).length
  }
}

type Link = ReturnType<typeof startLink>

function goConnected (link: Link): void {
  link.actor.send({ type: 'CONNECTED' })
}

function goStale (link: Link): void {
  goConnected(link)
  link.staleness.looksStale = true
  link.clock.advance(link.staleness.nextCheckMs)
}

/** Fails the current connection attempt `n` times, waiting out each backoff. */
function failAttempts (link: Link, n: number): void {
  for (let i = 0; i < n; i++) {
    link.actor.send({ type: 'CONNECTION_LOST', reason: `refused ${i}` })
    if (link.state() !== 'reconnecting') return
    link.clock.advance(link.context().retryDelayMs)
  }
}

function expectedBackoff (attempt: number, random: number): number {
  return Math.floor(random * Math.min(CAP_MS, BASE_MS * 2 ** attempt))
}


t.test('a new link starts connecting and opens one connection', async (t) => {
  const link = startLink(t)
  t.equal(link.state(), 'connecting')
  t.same(link.slotsSince(0), ['openConnection'])
  t.equal(link.context().attempts, 0)
  t.equal(link.context().lastError, null)
})

t.test('CONNECTED moves to connected, restores subscriptions, notifies up and resets attempts', async (t) => {
  const link = startLink(t)
  failAttempts(link, 2)
  t.equal(link.state(), 'connecting')
  t.equal(link.context().attempts, 2)
  t.equal(link.context().lastError, 'refused 1')

  const before = link.calls.length
  goConnected(link)
  t.same(link.value(), { connected: 'watching' })
  t.same(link.slotsSince(before), ['restoreSubscriptions', 'notifyUp'], 'subscriptions are back before anyone hears the link is up')
  t.equal(link.context().attempts, 0)
  t.equal(link.context().lastError, null)
})

t.test('a connection that does not come up within the connect timeout is retried', async (t) => {
  const link = startLink(t)
  link.clock.advance(CONNECT_TIMEOUT_MS - 1)
  t.equal(link.state(), 'connecting', 'not a millisecond early')
  t.same(link.slotsSince(0), ['openConnection'])

  link.clock.advance(1)
  t.equal(link.state(), 'reconnecting')
  t.equal(link.context().lastError, 'connect timeout')
  t.same(link.slotsSince(1), ['dropConnection', 'notifyDown'])
  const down = link.calls.find((c) => c.slot === 'notifyDown')
  t.equal(down?.lastError, 'connect timeout', 'notifyDown sees why')
  t.equal(down?.retryDelayMs, expectedBackoff(0, 0.5), 'notifyDown sees the chosen wait')
})

t.test('losing the connection drops it, notifies down and backs off', async (t) => {
  const from: Array<[string, (link: Link) => void]> = [
    ['connecting', () => {}],
    ['connected', goConnected],
    ['stale', goStale]
  ]
  for (const [name, reach] of from) {
    t.test(`from ${name}`, async (t) => {
      const link = startLink(t)
      reach(link)
      t.equal(link.state(), name)
      const before = link.calls.length
      link.actor.send({ type: 'CONNECTION_LOST', reason: 'socket hang up' })
      t.equal(link.state(), 'reconnecting')
      t.equal(link.context().lastError, 'socket hang up')
      t.same(link.slotsSince(before), ['dropConnection', 'notifyDown'])
      t.equal(link.calls.at(-1)?.lastError, 'socket hang up')
    })
  }
})

t.test('a reconnect waits the full-jitter backoff exactly, not a millisecond less', async (t) => {
  for (const r of [0.5, 0.999]) {
    t.test(`with random pinned to ${r}`, async (t) => {
      const link = startLink(t, { random: () => r, maxReconnectAttempts: 20 })
      for (let attempt = 0; attempt < 12; attempt++) {
        link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
        t.equal(link.state(), 'reconnecting')
        const wait = expectedBackoff(attempt, r)
        t.equal(link.context().retryDelayMs, wait, `attempt ${attempt} waits ${wait} ms`)
        const opens = link.count('openConnection')
        const lostAt = link.clock.now()
        if (wait > 0) {
          link.clock.advance(wait - 1)
          t.equal(link.state(), 'reconnecting', `attempt ${attempt}: still waiting 1 ms before`)
          t.equal(link.count('openConnection'), opens)
        }
        link.clock.advance(wait === 0 ? 0 : 1)
        t.equal(link.state(), 'connecting', `attempt ${attempt}: retries at ${wait} ms`)
        t.equal(link.count('openConnection'), opens + 1)
        t.equal(link.calls.at(-1)?.at, lostAt + wait)
        t.equal(link.context().attempts, attempt + 1)
      }
    })
  }

  t.test('with random pinned to 0 the retry is immediate', async (t) => {
    const link = startLink(t, { random: () => 0 })
    link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
    t.equal(link.context().retryDelayMs, 0)
    link.clock.advance(0)
    t.equal(link.state(), 'connecting')
    t.equal(link.count('openConnection'), 2)
  })
})

t.test('backoff doubles per attempt and stays capped at 30 s through hours of retries', async (t) => {
  const attempts = 600
  const link = startLink(t, { random: () => 0.999, maxReconnectAttempts: attempts })
  const waits: number[] = []
  // Every attempt times out: the machine alone drives connecting -> reconnecting -> connecting.
  link.clock.advance(CONNECT_TIMEOUT_MS)
  for (let i = 0; i < attempts; i++) {
    t.equal(link.state(), 'reconnecting')
    waits.push(link.context().retryDelayMs)
    link.clock.advance(link.context().retryDelayMs)
    t.equal(link.state(), 'connecting')
    link.clock.advance(CONNECT_TIMEOUT_MS)
  }
  t.ok(link.clock.now() > 5 * 3600_000, `simulated ${(link.clock.now() / 3600_000).toFixed(1)} hours`)
  t.same(waits.slice(0, 10), [99, 199, 399, 799, 1598, 3196, 6393, 12787, 25574, 29970])
  for (let i = 1; i < 9; i++) {
    t.ok(waits[i]! >= 2 * waits[i - 1]! && waits[i]! <= 2 * waits[i - 1]! + 1, `attempt ${i} doubles`)
  }
  t.ok(waits.every((w) => w < CAP_MS), 'never reaches the cap')
  t.ok(waits.slice(9).every((w) => w === 29_970), 'stays at the cap from attempt 9 on')
  t.equal(link.count('openConnection'), attempts + 1)
  t.equal(link.state(), 'givingUp', `gives up only after ${attempts} attempts`)
})

t.test('after maxReconnectAttempts failed attempts the link gives up', async (t) => {
  t.test('when attempts are refused', async (t) => {
    const link = startLink(t, { maxReconnectAttempts: 3 })
    failAttempts(link, 3)
    t.equal(link.state(), 'connecting')
    t.equal(link.context().attempts, 3)
    const before = link.calls.length
    link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused again' })
    t.same(link.value(), { givingUp: 'waiting' })
    t.same(link.slotsSince(before), ['dropConnection', 'notifyDown'])
    t.equal(link.context().retryDelayMs, CAP_MS)
    t.equal(link.context().lastError, 'refused again')
    t.equal(link.count('openConnection'), 4, 'the first connect and three retries')
  })

  t.test('when attempts time out', async (t) => {
    const link = startLink(t, { maxReconnectAttempts: 2 })
    for (let i = 0; i < 2; i++) {
      link.clock.advance(CONNECT_TIMEOUT_MS)
      t.equal(link.state(), 'reconnecting')
      link.clock.advance(link.context().retryDelayMs)
    }
    link.clock.advance(CONNECT_TIMEOUT_MS)
    t.same(link.value(), { givingUp: 'waiting' })
    t.equal(link.context().lastError, 'connect timeout')
    t.equal(link.count('notifyDown'), 3)
  })

  t.test('a reconnect that succeeds in between starts the count again', async (t) => {
    const link = startLink(t, { maxReconnectAttempts: 2 })
    failAttempts(link, 2)
    goConnected(link)
    failAttempts(link, 2)
    t.equal(link.state(), 'connecting', 'two fresh attempts, not four in all')
    link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
    t.equal(link.state(), 'givingUp')
  })
})

t.test('giving up retries at the cap interval forever and comes back on CONNECTED', async (t) => {
  const link = startLink(t, { maxReconnectAttempts: 1 })
  failAttempts(link, 1)
  link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
  t.same(link.value(), { givingUp: 'waiting' })

  const cycles = 200
  for (let i = 0; i < cycles; i++) {
    const opens = link.count('openConnection')
    link.clock.advance(CAP_MS - 1)
    t.same(link.value(), { givingUp: 'waiting' }, `cycle ${i}: waits the whole cap`)
    t.equal(link.count('openConnection'), opens)
    link.clock.advance(1)
    t.same(link.value(), { givingUp: 'attempting' })
    t.equal(link.count('openConnection'), opens + 1, `cycle ${i}: one attempt`)
    t.equal(link.context().attempts, 2 + i)

    const before = link.calls.length
    if (i % 2 === 0) {
      link.actor.send({ type: 'CONNECTION_LOST', reason: `refused ${i}` })
      t.equal(link.context().lastError, `refused ${i}`)
    } else {
      link.clock.advance(CONNECT_TIMEOUT_MS - 1)
      t.same(link.value(), { givingUp: 'attempting' })
      link.clock.advance(1)
      t.equal(link.context().lastError, 'connect timeout')
    }
    t.same(link.value(), { givingUp: 'waiting' })
    t.same(link.slotsSince(before), ['dropConnection'], 'a failed attempt is dropped, and nobody is told twice')
  }
  t.ok(link.clock.now() > 3600_000, 'more than an hour of retries')
  t.equal(link.count('notifyDown'), 2, 'once for reconnecting, once for giving up')

  link.clock.advance(CAP_MS)
  t.same(link.value(), { givingUp: 'attempting' })
  const before = link.calls.length
  goConnected(link)
  t.same(link.value(), { connected: 'watching' })
  t.same(link.slotsSince(before), ['restoreSubscriptions', 'notifyUp'])
  t.equal(link.context().attempts, 0)
  t.equal(link.context().lastError, null)

  link.actor.send({ type: 'CONNECTION_LOST', reason: 'lost again' })
  t.equal(link.state(), 'reconnecting', 'a fresh loss backs off again instead of giving up')
})

t.test('a silent link goes stale at the check and sends one probe', async (t) => {
  const link = startLink(t)
  goConnected(link)
  link.staleness.nextCheckMs = 1_000
  link.clock.advance(999)
  t.same(link.guardChecks, [])
  link.clock.advance(1)
  t.same(link.guardChecks, [1_000], 'checked at the delay')
  t.equal(link.state(), 'connected', 'not stale while the guard says so')

  link.staleness.nextCheckMs = 250
  link.clock.advance(1_000)
  t.same(link.guardChecks, [1_000, 2_000], 'the next check uses the delay computed after the previous one')
  link.clock.advance(250)
  t.same(link.guardChecks, [1_000, 2_000, 2_250])

  link.staleness.looksStale = true
  const before = link.calls.length
  link.clock.advance(250)
  t.equal(link.state(), 'stale')
  t.same(link.slotsSince(before), ['sendProbe'])
})

t.test('a probe answer returns to connected without resubscribing', async (t) => {
  const link = startLink(t)
  goStale(link)
  t.equal(link.state(), 'stale')
  link.staleness.looksStale = false
  const before = link.calls.length
  link.clock.advance(PROBE_TIMEOUT_MS - 1)
  link.actor.send({ type: 'PROBE_ACK' })
  t.same(link.value(), { connected: 'watching' })
  t.same(link.slotsSince(before), [], 'no restoreSubscriptions, no notifyUp: the session never went away')
  t.equal(link.count('restoreSubscriptions'), 1)

  link.clock.advance(PROBE_TIMEOUT_MS)
  t.equal(link.state(), 'connected', 'the probe timer died with the stale state')
})

t.test('an unanswered probe rebuilds the link with lastError probe timeout', async (t) => {
  const link = startLink(t)
  goStale(link)
  const before = link.calls.length
  link.clock.advance(PROBE_TIMEOUT_MS - 1)
  t.equal(link.state(), 'stale')
  link.clock.advance(1)
  t.equal(link.state(), 'reconnecting')
  t.equal(link.context().lastError, 'probe timeout')
  t.same(link.slotsSince(before), ['dropConnection', 'notifyDown'])
})

t.test('WAKE brings the staleness check forward', async (t) => {
  const link = startLink(t)
  link.staleness.nextCheckMs = 10_000
  goConnected(link)
  t.same(link.delayAsks, [0])
  link.clock.advance(100)

  link.staleness.nextCheckMs = 50
  link.actor.send({ type: 'WAKE' })
  t.same(link.delayAsks, [0, 100], 'the delay is computed again on WAKE')
  link.staleness.looksStale = true
  link.clock.advance(49)
  t.equal(link.state(), 'connected')
  link.clock.advance(1)
  t.same(link.guardChecks, [150], 'checked 50 ms after the wake, not at 10 s')
  t.equal(link.state(), 'stale')
  t.equal(link.count('restoreSubscriptions'), 1, 'WAKE does not leave connected')
})

t.test('WAKE outside connected changes nothing', async (t) => {
  const link = startLink(t)
  link.actor.send({ type: 'WAKE' })
  t.equal(link.state(), 'connecting')
  link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
  const before = link.calls.length
  link.actor.send({ type: 'WAKE' })
  t.equal(link.state(), 'reconnecting')
  t.same(link.slotsSince(before), [])
  t.same(link.delayAsks, [])
})

t.test('CLOSE ends the link from every state and leaves no timer behind', async (t) => {
  const reach: Record<string, (link: Link) => void> = {
    connecting: () => {},
    connected: goConnected,
    stale: goStale,
    reconnecting: (link) => { link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' }) },
    'givingUp.waiting': (link) => {
      link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
    },
    'givingUp.attempting': (link) => {
      link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
      link.clock.advance(CAP_MS)
    }
  }
  for (const [name, go] of Object.entries(reach)) {
    t.test(`from ${name}`, async (t) => {
      const link = startLink(t, { maxReconnectAttempts: name.startsWith('givingUp') ? 0 : 5 })
      go(link)
      const [top, sub] = name.split('.')
      t.equal(link.state(), top)
      if (sub !== undefined) t.same(link.value(), { [top!]: sub })

      const before = link.calls.length
      link.actor.send({ type: 'CLOSE' })
      t.equal(link.value(), 'closed')
      t.equal(link.actor.getSnapshot().status, 'done', 'closed is final')
      t.same(link.slotsSince(before), ['closeConnection'])
      t.equal(link.clock.liveTimers, 0, 'no timer outlives the link')

      link.clock.advance(24 * 3600_000)
      link.actor.send({ type: 'CONNECTED' })
      link.actor.send({ type: 'CONNECTION_LOST', reason: 'late' })
      t.same(link.slotsSince(before), ['closeConnection'], 'nothing happens after closed')
    })
  }
})

t.test('with maxReconnectAttempts 0 the first failure gives up at once', async (t) => {
  const lose = (link: Link): void => { link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' }) }
  const cases: Array<[string, (link: Link) => void, (link: Link) => void, string]> = [
    ['a refused first connect', () => {}, lose, 'refused'],
    ['a first connect that times out', () => {}, (link) => { link.clock.advance(CONNECT_TIMEOUT_MS) }, 'connect timeout'],
    ['a lost connection', goConnected, lose, 'refused'],
    ['a lost stale connection', goStale, lose, 'refused'],
    ['an unanswered probe', goStale, (link) => { link.clock.advance(PROBE_TIMEOUT_MS) }, 'probe timeout']
  ]
  for (const [name, reach, fail, reason] of cases) {
    t.test(name, async (t) => {
      const link = startLink(t, { maxReconnectAttempts: 0 })
      reach(link)
      const before = link.calls.length
      fail(link)
      t.same(link.value(), { givingUp: 'waiting' })
      t.equal(link.context().lastError, reason)
      t.same(link.slotsSince(before), ['dropConnection', 'notifyDown'])
      t.equal(link.count('openConnection'), 1, 'no backoff retry first')
      link.clock.advance(CAP_MS)
      t.same(link.value(), { givingUp: 'attempting' }, 'and still retries at the cap')
      t.equal(link.count('openConnection'), 2)
    })
  }
})

t.test('fullJitterDelayMs stays in [0, min(cap, base * 2^attempt))', async (t) => {
  const random = seeded(42)
  const bases = [1, 50, 100, 1_000]
  const caps = [1, 1_000, 30_000, 600_000]
  let checked = 0
  for (const base of bases) {
    for (const cap of caps) {
      for (let attempt = 0; attempt <= 80; attempt++) {
        const ceiling = Math.min(cap, base * 2 ** attempt)
        for (const r of [0, random(), random(), 1 - Number.EPSILON]) {
          const ms = fullJitterDelayMs(attempt, base, cap, () => r)
          checked++
          if (!(Number.isInteger(ms) && ms >= 0 && ms < ceiling)) {
            t.fail(`attempt ${attempt}, base ${base}, cap ${cap}, random ${r}: got ${ms}, ceiling ${ceiling}`)
          }
        }
      }
    }
  }
  t.pass(`${checked} draws in range`)
})

t.test('fullJitterDelayMs is the random fraction of the ceiling, floored', async (t) => {
  t.equal(fullJitterDelayMs(0, 100, 30_000, () => 0.5), 50)
  t.equal(fullJitterDelayMs(3, 100, 30_000, () => 0.5), 400)
  t.equal(fullJitterDelayMs(3, 100, 30_000, () => 0.999), 799)
  t.equal(fullJitterDelayMs(9, 100, 30_000, () => 0.5), 15_000, 'capped: 51.2 s becomes 30 s')
  t.equal(fullJitterDelayMs(0, 100, 30_000, () => 0), 0)
})

t.test('fullJitterDelayMs stays finite and capped for absurd attempt counts', async (t) => {
  for (const attempt of [31, 100, 1_024, 1e6, Number.MAX_SAFE_INTEGER]) {
    const ms = fullJitterDelayMs(attempt, 100, 30_000, () => 0.999)
    t.equal(ms, 29_970, `attempt ${attempt}`)
  }
})

t.test('fullJitterDelayMs draws once per call', async (t) => {
  let draws = 0
  fullJitterDelayMs(4, 100, 30_000, () => { draws++; return 0.3 })
  t.equal(draws, 1)
})

t.test('linkStateName reports the top-level state of nested values', async (t) => {
  t.equal(linkStateName('connecting'), 'connecting')
  t.equal(linkStateName('reconnecting'), 'reconnecting')
  t.equal(linkStateName('stale'), 'stale')
  t.equal(linkStateName('closed'), 'closed')
  t.equal(linkStateName({ givingUp: 'waiting' }), 'givingUp')
  t.equal(linkStateName({ givingUp: 'attempting' }), 'givingUp')
  t.equal(linkStateName({ connected: 'watching' }), 'connected')
})

t.test('linkStateName names every state the running machine reaches', async (t) => {
  const link = startLink(t, { maxReconnectAttempts: 0 })
  const seen = new Set<string>()
  link.actor.subscribe((s) => { seen.add(linkStateName(s.value)) })
  goStale(link)
  link.actor.send({ type: 'PROBE_ACK' })
  link.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
  link.clock.advance(CAP_MS)
  link.actor.send({ type: 'CLOSE' })
  t.same([...seen].sort(), ['closed', 'connected', 'givingUp', 'stale'])

  const other = startLink(t)
  other.actor.send({ type: 'CONNECTION_LOST', reason: 'refused' })
  t.equal(other.state(), 'reconnecting')
})
