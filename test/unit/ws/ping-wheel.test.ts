// The ping wheel on simulated time: one ping per socket per interval, spread evenly whatever
// the sockets' joining times, none after remove(), catch-up after a late tick, nothing armed after stop().
import t from 'tap'
import { createPingWheel, pingIntervalMs, uwsPingAfterS } from '../../../src/ws/ping-wheel.js'
import { CountingClock } from '../../fixtures/counting-clock.js'

/** A deterministic [0, 1) sequence (mulberry32), so spreads are the same on every run. */
function seeded (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Moves simulated time forward 100 ms at a time: SimulatedClock fires a timer armed while it
 * advances only on the next advance, so one big step would look like one very late tick.
 */
function run (clock: CountingClock, ms: number): void {
  for (let done = 0; done < ms; done += 100) clock.advance(Math.min(100, ms - done))
}

function wheelWithLog (clock: CountingClock, intervalMs: number, tickMs: number) {
  const pings: Array<{ item: number, at: number }> = []
  const wheel = createPingWheel<number>({ clock, intervalMs, tickMs, random: seeded(7), ping: (item) => { pings.push({ item, at: clock.now() }) } })
  return { wheel, pings }
}

t.test('every socket is pinged once per interval, the first time within one interval of joining', async (t) => {
  const clock = new CountingClock()
  const { wheel, pings } = wheelWithLog(clock, 14_000, 200)
  wheel.start()
  for (let i = 0; i < 500; i++) wheel.add(i)
  run(clock, 14_000)
  const first = new Map<number, number>()
  for (const p of pings) first.set(p.item, (first.get(p.item) ?? 0) + 1)
  t.equal(first.size, 500, 'all 500 pinged within the first interval')
  t.ok([...first.values()].every((n) => n === 1), 'each exactly once')
  run(clock, 14_000 * 3)
  const count = new Map<number, number[]>()
  for (const p of pings) count.set(p.item, [...(count.get(p.item) ?? []), p.at])
  for (const [item, times] of count) {
    t.equal(times.length, 4, `socket ${item}: one ping per interval over four intervals`)
    const gaps = times.slice(1).map((at, i) => at - (times[i] ?? 0))
    if (!gaps.every((g) => g === 14_000)) t.fail(`socket ${item}: pinged at even intervals, got gaps ${gaps.join(', ')}`)
  }
})

t.test('sockets that join at the same moment are spread over the whole interval, not pinged together', async (t) => {
  const clock = new CountingClock()
  const { wheel, pings } = wheelWithLog(clock, 14_000, 200)
  wheel.start()
  for (let i = 0; i < 10_000; i++) wheel.add(i)
  run(clock, 14_000)
  const perTick = new Map<number, number>()
  for (const p of pings) perTick.set(p.at, (perTick.get(p.at) ?? 0) + 1)
  const slots = 14_000 / 200
  t.equal(perTick.size, slots, 'pings land in every one of the 70 ticks')
  const largest = Math.max(...perTick.values())
  // Even: 10,000 / 70 = 143 per tick; a burst would put thousands in one.
  t.ok(largest < 2 * (10_000 / slots), `the busiest tick has ${largest} pings (even share ${Math.round(10_000 / slots)})`)
})

t.test('a removed socket is not pinged again, and removing twice or an unknown socket is harmless', async (t) => {
  const clock = new CountingClock()
  const { wheel, pings } = wheelWithLog(clock, 2000, 200)
  wheel.start()
  wheel.add(1)
  wheel.add(2)
  wheel.add(2)
  t.equal(wheel.size, 2, 'adding twice keeps one entry')
  run(clock, 2000)
  wheel.remove(1)
  wheel.remove(1)
  wheel.remove(99)
  pings.length = 0
  run(clock, 10_000)
  t.same([...new Set(pings.map((p) => p.item))], [2], 'only the socket still there')
  t.equal(pings.length, 5, 'once per interval')
  t.equal(wheel.size, 1)
})

t.test('late ticks catch up on the slots they missed: no socket waits more than an interval plus the delay', async (t) => {
  const pings: Array<{ item: number, at: number }> = []
  // A clock whose timers fire 1.5 s late, as under a busy loop.
  const sim = new CountingClock()
  const late = { now: sim.now, setTimeout: (fn: () => void, ms: number) => sim.setTimeout(fn, ms + 1500), clearTimeout: sim.clearTimeout }
  const wheel = createPingWheel<number>({ clock: late, intervalMs: 4000, tickMs: 200, random: seeded(3), ping: (item) => { pings.push({ item, at: sim.now() }) } })
  wheel.start()
  for (let i = 0; i < 100; i++) wheel.add(i)
  run(sim, 40_000)
  for (let i = 0; i < 100; i++) {
    const times = [0, ...pings.filter((p) => p.item === i).map((p) => p.at)]
    const longest = Math.max(...times.slice(1).map((at, k) => at - (times[k] ?? 0)))
    if (longest > 4000 + 1500 + 100) t.fail(`socket ${i} waited ${longest} ms for a ping`)
  }
  const perSocket = pings.length / 100
  t.ok(perSocket >= 9 && perSocket <= 10, `about one ping per interval (${perSocket} each in 40 s)`)
  t.pass('no socket waited more than an interval plus the delay')
})

t.test('a tick more than a whole turn late pings every socket once, not once per missed turn', async (t) => {
  const pings: number[] = []
  const sim = new CountingClock()
  const late = { now: sim.now, setTimeout: (fn: () => void, ms: number) => sim.setTimeout(fn, ms + 10_000), clearTimeout: sim.clearTimeout }
  const wheel = createPingWheel<number>({ clock: late, intervalMs: 2000, tickMs: 200, random: seeded(5), ping: (item) => { pings.push(item) } })
  wheel.start()
  for (let i = 0; i < 50; i++) wheel.add(i)
  sim.advance(10_200)
  t.equal(pings.length, 50)
  t.equal(new Set(pings).size, 50)
})

t.test('stop leaves no timer armed and no ping is sent after it', async (t) => {
  const clock = new CountingClock()
  const { wheel, pings } = wheelWithLog(clock, 2000, 200)
  wheel.start()
  wheel.start()
  wheel.add(1)
  t.equal(clock.liveTimers, 1, 'one timer, however often started')
  wheel.stop()
  t.equal(clock.liveTimers, 0)
  run(clock, 10_000)
  t.equal(pings.length, 0)
})

t.test('the ping interval leaves a live peer two pongs before uWS\'s own ping timer can run out', async (t) => {
  t.equal(uwsPingAfterS(32), 16, 'uWS splits 32 s into 16 + 16')
  t.equal(uwsPingAfterS(8), 4, 'and 8 s into 4 + 4')
  t.equal(uwsPingAfterS(960), 944, 'and long timeouts keep a 16 s margin')
  t.equal(pingIntervalMs(32), 6000, 'default idle timeout 32 s: every 6 s')
  t.equal(pingIntervalMs(8), 1000, 'the smallest allowed idle timeout: every second (the floor)')
  for (const idle of [12, 16, 31, 32, 100, 960]) {
    // uWS's timer runs out no earlier than uwsPingAfterS - 4 s after the last data received.
    t.ok(2 * pingIntervalMs(idle) <= (uwsPingAfterS(idle) - 4) * 1000, `idle ${idle} s`)
  }
})
