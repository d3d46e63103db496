import t from 'tap'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { SimulatedClock } from 'xstate'
import { createRateLimiter, DEFAULT_MAX_KEYS } from '../../../src/auth/rate-limiter.js'

/** The contract's numbers: LOGIN_MAX_FAILURES = 10 within 60 s. */
function loginLimiter (maxKeys?: number) {
  const clock = new SimulatedClock()
  const limiter = createRateLimiter({ capacity: 10, windowMs: 60_000, clock, ...(maxKeys !== undefined ? { maxKeys } : {}) })
  return { clock, limiter }
}

/**
 * A handle on V8's collector without a command-line flag (tap starts each test file itself):
 * setting --expose-gc at run time makes `gc` appear in contexts created afterwards.
 */
function collector (): () => void {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

t.test('ten failures pass and the eleventh attempt within 60 s is blocked with Retry-After', async (t) => {
  const { clock, limiter } = loginLimiter()
  for (let i = 0; i < 10; i++) {
    t.same(limiter.check('user:alice'), { allowed: true }, `attempt ${i + 1} allowed`)
    limiter.fail('user:alice')
    clock.increment(100)
  }
  const decision = limiter.check('user:alice')
  t.equal(decision.allowed, false, 'the 11th attempt, 1 s after the first, is refused')
  if (decision.allowed) return
  // 1 s of refill at 10 tokens per 60 s has brought back 1/6 of a token; the other 5/6 take 5 s.
  t.equal(decision.retryAfterS, 5, 'Retry-After is the time until one whole token is back')
})

t.test('a burst of ten failures blocks until one token is back, and Retry-After says when', async (t) => {
  const { clock, limiter } = loginLimiter()
  for (let i = 0; i < 10; i++) limiter.fail('ip:192.0.2.7')
  t.same(limiter.check('ip:192.0.2.7'), { allowed: false, retryAfterS: 6 }, '60 s / 10 tokens: one is back in 6 s')
  clock.increment(5_900)
  t.same(limiter.check('ip:192.0.2.7'), { allowed: false, retryAfterS: 1 }, '0.1 s to go still says 1 s, never 0')
  clock.increment(100)
  t.same(limiter.check('ip:192.0.2.7'), { allowed: true }, 'one token back after 6 s')
  limiter.fail('ip:192.0.2.7')
  t.equal(limiter.check('ip:192.0.2.7').allowed, false, 'and it is spent by the next failure')
})

t.test('an emptied bucket is full again one window later', async (t) => {
  const { clock, limiter } = loginLimiter()
  for (let i = 0; i < 10; i++) limiter.fail('user:bob')
  clock.increment(60_000)
  for (let i = 0; i < 10; i++) {
    t.equal(limiter.check('user:bob').allowed, true)
    limiter.fail('user:bob')
  }
  t.equal(limiter.check('user:bob').allowed, false, 'ten more failures allowed, then blocked again')
})

t.test('checking never consumes a token', async (t) => {
  const { limiter } = loginLimiter()
  for (let i = 0; i < 9; i++) limiter.fail('user:carol')
  for (let i = 0; i < 100; i++) t.equal(limiter.check('user:carol').allowed, true)
  limiter.fail('user:carol')
  t.equal(limiter.check('user:carol').allowed, false)
})

t.test('keys are independent: a blocked username does not block another, nor its address', async (t) => {
  const { limiter } = loginLimiter()
  for (let i = 0; i < 10; i++) limiter.fail('user:dave')
  t.equal(limiter.check('user:dave').allowed, false)
  t.same(limiter.check('user:erin'), { allowed: true })
  t.same(limiter.check('ip:198.51.100.1'), { allowed: true })
})

t.test('reset clears a key at once', async (t) => {
  const { limiter } = loginLimiter()
  for (let i = 0; i < 10; i++) limiter.fail('user:frank')
  t.equal(limiter.check('user:frank').allowed, false)
  limiter.reset('user:frank')
  t.same(limiter.check('user:frank'), { allowed: true })
  t.equal(limiter.size, 0, 'nothing held for it')
  limiter.reset('user:never-seen')
  t.equal(limiter.size, 0, 'resetting an unknown key is harmless')
})

t.test('checks alone create no entries', async (t) => {
  const { limiter } = loginLimiter()
  for (let i = 0; i < 1_000; i++) limiter.check(`user:${i}`)
  t.equal(limiter.size, 0)
})

t.test('a refilled bucket is dropped, lazily, as the limiter is used', async (t) => {
  const { clock, limiter } = loginLimiter()
  for (let i = 0; i < 100; i++) limiter.fail(`ip:10.0.0.${i}`)
  t.equal(limiter.size, 100)
  clock.increment(6_000) // one failure's token is back: every entry now answers like a missing one
  t.same(limiter.check('ip:10.0.0.5'), { allowed: true })
  for (let i = 0; i < 100 && limiter.size > 0; i++) limiter.check('user:anyone')
  t.equal(limiter.size, 0, 'a hundred calls sweep a hundred idle entries, with no timer')
})

t.test('a steady stream of one-off failures holds only the keys still refilling', async (t) => {
  const { clock, limiter } = loginLimiter()
  // One failure per ms from distinct addresses for 200 s: a single failure's token is back
  // in 6 s, so about 6,000 entries are live at any moment; the rest must have been swept.
  let peak = 0
  for (let i = 0; i < 200_000; i++) {
    limiter.fail(`ip:${i}`)
    clock.increment(1)
    peak = Math.max(peak, limiter.size)
  }
  t.ok(peak <= 6_001, `at most 6,001 entries held (peak ${peak}), far below maxKeys`)
})

t.test('when full, the least recently touched key is evicted', async (t) => {
  const clock = new SimulatedClock()
  const limiter = createRateLimiter({ capacity: 1, maxKeys: 3, clock })
  limiter.fail('a')
  limiter.fail('b')
  limiter.fail('c')
  t.equal(limiter.check('a').allowed, false, 'checking a touches it, so b is now the oldest')
  limiter.fail('d')
  t.equal(limiter.size, 3)
  t.equal(limiter.check('b').allowed, true, 'b was evicted')
  t.equal(limiter.check('a').allowed, false, 'a kept')
  t.equal(limiter.check('c').allowed, false, 'c kept')
  t.equal(limiter.check('d').allowed, false, 'd held')
})

t.test('a million distinct keys keep memory bounded', async (t) => {
  const gc = collector()
  const clock = new SimulatedClock()
  const limiter = createRateLimiter({ capacity: 10, clock })
  gc()
  const before = process.memoryUsage().heapUsed
  let maxSize = 0
  // Time stands still: every entry stays live, the worst case for the bound.
  for (let i = 0; i < 1_000_000; i++) {
    limiter.fail(`ip:10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`)
    if (limiter.size > maxSize) maxSize = limiter.size
  }
  gc()
  const grownMb = (process.memoryUsage().heapUsed - before) / 1e6
  t.equal(maxSize, DEFAULT_MAX_KEYS, 'never more than maxKeys entries (100,000 by default)')
  t.equal(limiter.size, DEFAULT_MAX_KEYS)
  // Measured at about 250-300 bytes per entry (key string, bucket, Map slot), so 100,000
  // entries take about 28 MB; the same million keys held without a bound take about 220 MB.
  // 64 MB leaves room for the collector's slack and still tells the two apart.
  t.ok(grownMb < 64, `heap grew ${grownMb.toFixed(1)} MB (< 64 MB)`)
  // Eviction took the oldest keys, not the newest: the last key (999,999) still has its
  // failure on record, so nine more empty it; the first key was forgotten, so nine leave one.
  for (let i = 0; i < 9; i++) limiter.fail('ip:10.15.66.63')
  t.equal(limiter.check('ip:10.15.66.63').allowed, false, 'the newest key was kept')
  for (let i = 0; i < 9; i++) limiter.fail('ip:10.0.0.0')
  t.equal(limiter.check('ip:10.0.0.0').allowed, true, 'the oldest key was evicted')
})

t.test('bad options are refused at construction', async (t) => {
  const clock = new SimulatedClock()
  t.throws(() => createRateLimiter({ capacity: 0, clock }), RangeError)
  t.throws(() => createRateLimiter({ capacity: 10, maxKeys: 0, clock }), RangeError)
  t.throws(() => createRateLimiter({ capacity: 10, windowMs: 0, clock }), RangeError)
  t.throws(() => createRateLimiter({ capacity: 10, refillPerSecond: 0, clock }), RangeError)
})

t.test('refund gives back exactly the token one failure took, and a full bucket is forgotten', async (t) => {
  const sim = new SimulatedClock()
  const limiter = createRateLimiter({ capacity: 2, clock: sim })
  limiter.fail('k')
  limiter.fail('k')
  t.equal(limiter.check('k').allowed, false)
  limiter.refund('k')
  t.equal(limiter.check('k').allowed, true, 'one token back')
  limiter.refund('k')
  t.equal(limiter.size, 0, 'full again: the entry is dropped')
  limiter.refund('unknown')
  t.equal(limiter.size, 0, 'refunding an unknown key creates nothing')
})
