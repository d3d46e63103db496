import t from 'tap'
import { createLoginThrottle } from '../../../src/auth/login-throttle.js'
import { createRateLimiter } from '../../../src/auth/rate-limiter.js'
import type { LoginThrottleStore } from '../../../src/db/login-throttle-store.js'
import { silentLogger } from '../../../src/log.js'

/** The shared buckets in memory, refilling at the same rate as the real store's SQL. */
function memoryStore (now: () => number): LoginThrottleStore & { calls: string[] } {
  const rows = new Map<string, { tokens: number, at: number }>()
  const calls: string[] = []
  return {
    calls,
    async take (keys, capacity, perSecond) {
      calls.push('take')
      const before = new Map<string, number>()
      for (const key of keys) {
        const row = rows.get(key)
        const tokens = row === undefined ? capacity : Math.min(capacity, row.tokens + (now() - row.at) / 1000 * perSecond)
        before.set(key, tokens)
        rows.set(key, { tokens: tokens - 1, at: now() })
      }
      return before
    },
    async refund (key, capacity) { calls.push('refund'); const r = rows.get(key); if (r !== undefined) r.tokens = Math.min(capacity, r.tokens + 1) },
    async reset (key) { calls.push('reset'); rows.delete(key) }
  }
}

t.test('the shared count decides: three gateways\' failures on one store block the fourth attempt on any of them', async (t) => {
  let now = 0
  const clock = { now: () => now }
  const store = memoryStore(clock.now)
  const gateways = [1, 2, 3].map(() => createLoginThrottle({ local: createRateLimiter({ capacity: 3, clock }), store: () => store, capacity: 3, windowMs: 60_000, log: silentLogger() }))
  for (const g of gateways) t.same(await g.take(['user:a', 'ip:1']), { allowed: true })
  const fourth = await gateways[0]!.take(['user:a', 'ip:2'])
  t.equal(fourth.allowed, false)
  t.same(fourth, { allowed: false, retryAfterS: 20, key: 'user:a' }, 'one token back at 3 per 60 s: 20 s; the username ran out')
  now += 20_000
  t.same(await gateways[1]!.take(['user:a', 'ip:3']), { allowed: true }, 'refilled')
})

t.test('a refused attempt counts nothing in the store; this gateway keeps counting it, so a flood stops here', async (t) => {
  const clock = { now: () => 0 }
  const store = memoryStore(clock.now)
  const g = createLoginThrottle({ local: createRateLimiter({ capacity: 1, clock }), store: () => store, capacity: 1, windowMs: 60_000, log: silentLogger() })
  t.same(await g.take(['user:a', 'ip:1']), { allowed: true })
  const other = createLoginThrottle({ local: createRateLimiter({ capacity: 1, clock }), store: () => store, capacity: 1, windowMs: 60_000, log: silentLogger() })
  t.equal((await other.take(['user:a', 'ip:9'])).allowed, false, 'refused by the shared count of user:a')
  await new Promise((resolve) => setImmediate(resolve))
  const third = createLoginThrottle({ local: createRateLimiter({ capacity: 1, clock }), store: () => store, capacity: 1, windowMs: 60_000, log: silentLogger() })
  t.same((await third.take(['user:b', 'ip:9'])), { allowed: true }, 'ip:9 got its shared token back')
  const before = store.calls.length
  t.equal((await other.take(['user:c', 'ip:9'])).allowed, false, 'the refusing gateway blocks ip:9 on its own now')
  t.equal(store.calls.length, before, 'without asking the store')
})

t.test('with the store unavailable or failing, the gateway\'s own count still limits', async (t) => {
  const clock = { now: () => 0 }
  const failing: LoginThrottleStore = { take: async () => { throw new Error('connection refused') }, refund: async () => { throw new Error('down') }, reset: async () => { throw new Error('down') } }
  for (const store of [() => null, () => failing]) {
    const g = createLoginThrottle({ local: createRateLimiter({ capacity: 2, clock }), store, capacity: 2, windowMs: 60_000, log: silentLogger() })
    t.same(await g.take(['user:a']), { allowed: true })
    t.same(await g.take(['user:a']), { allowed: true })
    t.equal((await g.take(['user:a'])).allowed, false, 'the third is refused locally')
    g.reset('user:a')
    g.refund(['user:a'])
    t.same(await g.take(['user:a']), { allowed: true }, 'reset works without the store')
  }
})

t.test('a take right after a reset waits for it: a failure just after a successful login finds the username cleared, however slow the store', async (t) => {
  const clock = { now: () => 0 }
  const store = memoryStore(clock.now)
  let release = (): void => {}
  const slowReset = store.reset
  store.reset = async (key) => { await new Promise<void>((resolve) => { release = resolve }); await slowReset(key) }
  const g = createLoginThrottle({ local: createRateLimiter({ capacity: 2, clock }), store: () => store, capacity: 2, windowMs: 60_000, log: silentLogger() })
  t.same(await g.take(['user:a']), { allowed: true })
  t.same(await g.take(['user:a']), { allowed: true })
  g.reset('user:a')
  const next = g.take(['user:a'])
  await new Promise((resolve) => setImmediate(resolve))
  t.same(store.calls.filter((c) => c === 'take').length, 2, 'the take waits while the reset is in flight')
  release()
  t.same(await next, { allowed: true }, 'and then finds the count cleared')
})
