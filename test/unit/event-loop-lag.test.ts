// The lag monitor: each second's largest delay for the metrics, and a stall never lost.
import t from 'tap'
import { createLagMonitor } from '../../src/event-loop-lag.js'
import { systemClock } from '../../src/clock.js'

t.test('a stall of the real loop is reported in the next samples, net of the 20 ms sampling period', async (t) => {
  const samples: number[] = []
  const lag = createLagMonitor({ clock: systemClock, sampleMs: 200, onSample: (s) => { samples.push(s) } })
  lag.start()
  t.teardown(() => { lag.stop() })
  await new Promise((resolve) => setTimeout(resolve, 300))
  const until = Date.now() + 400
  while (Date.now() < until) { /* block the loop */ }
  await new Promise((resolve) => setTimeout(resolve, 700))
  t.ok(Math.max(...samples) >= 0.35, `a sample of at least 350 ms (got ${samples.map((s) => Math.round(s * 1000)).join(', ')} ms)`)
})

t.test('a sample timer that fires late reports the lateness even when the histogram saw nothing', async (t) => {
  // A clock under the test's control: its one timer is fired by hand, as late as wanted.
  let now = 0
  let pending: (() => void) | null = null
  const clock = { now: () => now, setTimeout: (fn: () => void) => { pending = fn; return 1 }, clearTimeout: () => { pending = null } }
  const samples: number[] = []
  const lag = createLagMonitor({ clock, sampleMs: 1000, onSample: (s) => { samples.push(s) } })
  lag.start()
  t.teardown(() => { lag.stop() })
  now = 1000 + 1500
  const fire = pending as (() => void) | null
  t.ok(fire !== null, 'a sample timer is armed')
  fire?.()
  t.ok(samples.length === 1 && (samples[0] ?? 0) >= 1.5, `reported ${samples.join(', ')} s for a timer 1.5 s late`)
})

t.test('stop disarms the sample timer', async (t) => {
  let armed = 0
  const clock = { now: () => 0, setTimeout: () => { armed++; return armed }, clearTimeout: () => { armed-- } }
  const lag = createLagMonitor({ clock, onSample: () => {} })
  lag.start()
  t.equal(armed, 1)
  lag.stop()
  t.equal(armed, 0)
})
