import t from 'tap'
import { createPasswords } from '../../../src/auth/password.js'
import { silentLogger } from '../../../src/log.js'
import { createThreadPool } from '../../../src/threads/thread-pool.js'
import hashPassword from '../../../workers/hash-password.worker.js'
import verifyPassword from '../../../workers/verify-password.worker.js'

/** The tests below hash at 2^12: the format is the same, and 2^17 (the default, pinned by the first test) costs 128 MiB and ~0.3 s of a thread per hash. */
const COST = 12
const FORMAT = /^scrypt\$4096\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/

// One pool for the file: starting threads under the TypeScript loader takes most of a second.
const pool = createThreadPool({ threads: 2, maxQueue: 16, defaultTimeoutMs: 30_000, log: silentLogger() })
pool.start()
t.teardown(() => pool.stop())
const passwords = createPasswords(pool, { cost: COST })

t.test('new hashes use OWASP\'s scrypt floor, N = 2^17 with r = 8 and p = 1, unless a cost is given', async (t) => {
  t.match(await hashPassword({ password: 'x' }), /^scrypt\$131072\$8\$1\$/)
  t.match(await hashPassword({ password: 'x', cost: 12 }), /^scrypt\$4096\$8\$1\$/)
  await t.rejects(hashPassword({ password: 'x', cost: 30 }), TypeError, 'a cost past the verifier\'s memory bound is refused')
  t.equal(await verifyPassword({ password: 'x', hash: await hashPassword({ password: 'x', cost: 18 }) }), true, 'the highest cost still verifies')
})

t.test('a hash verifies against its own password', async (t) => {
  const hash = await passwords.hash('correct horse battery staple')
  t.match(hash, FORMAT, 'scrypt$N$r$p$salt$key with a 16-byte salt and a 32-byte key')
  t.equal(await passwords.verify('correct horse battery staple', hash), true)
})

t.test('a wrong password does not verify', async (t) => {
  const hash = await passwords.hash('hunter2')
  t.equal(await passwords.verify('hunter3', hash), false)
  t.equal(await passwords.verify('', hash), false)
  t.equal(await passwords.verify('Hunter2', hash), false)
})

t.test('two hashes of the same password differ by their salt, and both verify', async (t) => {
  const [a, b] = await Promise.all([passwords.hash('same'), passwords.hash('same')])
  t.not(a, b)
  t.equal(await passwords.verify('same', a), true)
  t.equal(await passwords.verify('same', b), true)
})

t.test('a malformed or foreign hash answers false and never throws', async (t) => {
  const good = await passwords.hash('pw')
  const [, n, r, p, salt, key] = good.split('$') as [string, string, string, string, string, string]
  const bad: Record<string, string> = {
    empty: '',
    'not a hash': 'pw',
    bcrypt: '$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW',
    'argon2 with our separator': '$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$aGFzaA',
    'wrong scheme name': `scrypt2$${n}$${r}$${p}$${salt}$${key}`,
    'missing field': `scrypt$${n}$${r}$${p}$${key}`,
    'extra field': `${good}$extra`,
    'N not a power of two': `scrypt$16383$${r}$${p}$${salt}$${key}`,
    'N absurdly large': `scrypt$1073741824$${r}$${p}$${salt}$${key}`,
    'N in hex': `scrypt$0x4000$${r}$${p}$${salt}$${key}`,
    'r zero': `scrypt$${n}$0$${p}$${salt}$${key}`,
    'p negative': `scrypt$${n}$${r}$-1$${salt}$${key}`,
    'salt not base64': `scrypt$${n}$${r}$${p}$not*base64$${key}`,
    'empty salt': `scrypt$${n}$${r}$${p}$$${key}`,
    'key truncated': `scrypt$${n}$${r}$${p}$${salt}$${key.slice(0, 8)}`,
    'memory over the bound': `scrypt$1048576$8$${p}$${salt}$${key}`
  }
  for (const [what, hash] of Object.entries(bad)) {
    t.equal(await passwords.verify('pw', hash), false, what)
  }
  // Not through the typed API, but a row could hold anything: the worker checks its input.
  t.equal(await verifyPassword({ password: 'pw', hash: null as unknown as string }), false, 'a non-string hash')
  t.equal(await verifyPassword({ password: 42 as unknown as string, hash: good }), false, 'a non-string password')
})

t.test('the same password composed differently verifies (NFC)', async (t) => {
  const composed = 'caf\u00e9'
  const decomposed = 'cafe\u0301'
  const hash = await passwords.hash(composed)
  t.equal(await passwords.verify(decomposed, hash), true)
})

t.test('the worker functions are plain: data in, data out', async (t) => {
  // Called directly, without the pool: no state, nothing but the arguments.
  const hash = await hashPassword({ password: 'direct', cost: COST })
  t.match(hash, FORMAT)
  t.equal(await verifyPassword({ password: 'direct', hash }), true)
  await t.rejects(hashPassword({ password: undefined as unknown as string }), TypeError, 'hashing a non-string is a caller bug')
})

t.test('hashing runs off the main thread: the event loop keeps turning during four hashes', async (t) => {
  const before = pool.stats().completed
  let ticks = 0
  let hashing = true
  const spin = (): void => {
    ticks++
    if (hashing) setImmediate(spin)
  }
  setImmediate(spin)
  const startTicks = ticks
  // 2^14: tens of ms per hash, long enough for the loop's turns to be counted meaningfully.
  const slower = createPasswords(pool, { cost: 14 })
  await Promise.all([slower.hash('a'), slower.hash('b'), slower.hash('c'), slower.hash('d')])
  hashing = false
  t.equal(pool.stats().completed - before, 4, 'all four went through the thread pool')
  // Each hash is tens of ms of CPU; on the main thread the loop could not turn while one ran,
  // so at most a handful of turns would fit. Off it, the loop turns freely throughout.
  t.ok(ticks - startTicks >= 20, `event loop turned ${ticks - startTicks} times while hashing`)
})
