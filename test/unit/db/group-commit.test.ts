import t from 'tap'
import { TetherError } from '../../../src/errors.js'
import { createGroupCommit } from '../../../src/db/group-commit.js'

/** A fake statement: records each batch and waits until the test commits it. */
function fakeDatabase () {
  const batches: number[][] = []
  const pending: Array<{ ops: number[], commit: (fail?: unknown) => void }> = []
  const run = async (ops: number[]): Promise<string[]> => {
    batches.push(ops)
    await new Promise<void>((resolve, reject) => {
      pending.push({ ops, commit: (fail) => { if (fail === undefined) resolve(); else reject(fail) } })
    })
    return ops.map((op) => `stored ${op}`)
  }
  /** Commits the batch in flight (optionally failing it) and lets the next one start. */
  const commit = async (fail?: unknown): Promise<void> => {
    const batch = pending.shift()
    if (batch === undefined) throw new Error('no batch in flight')
    batch.commit(fail)
    await new Promise((resolve) => setImmediate(resolve))
  }
  return { batches, run, commit, get inFlight () { return pending.length } }
}

/** A statement that runs on the next turn and fails when `failure` names an error for the batch (the nth run, from 1). */
function scripted (failure: (ops: number[], n: number) => unknown) {
  const runs: number[][] = []
  const run = async (ops: number[]): Promise<string[]> => {
    runs.push(ops)
    await new Promise((resolve) => setImmediate(resolve))
    const err = failure(ops, runs.length)
    if (err !== undefined) throw err
    return ops.map((op) => `stored ${op}`)
  }
  return { runs, run }
}

const settled = <T>(p: Promise<T>): Promise<{ ok: true, value: T } | { ok: false, err: unknown }> =>
  p.then((value) => ({ ok: true as const, value }), (err: unknown) => ({ ok: false as const, err }))

t.test('a lone write goes at once; what queues while a batch commits goes in the next, in order, one batch at a time', async (t) => {
  const db = fakeDatabase()
  const sizes: number[] = []
  const g = createGroupCommit<number, string>({ maxBatch: 100, maxQueue: 1000, run: db.run, isOpFault: () => false, onBatch: (n) => { sizes.push(n) } })
  const first = g.submit(1)
  t.same(db.batches, [[1]], 'no waiting for company')
  const rest = [2, 3, 4, 5].map((n) => g.submit(n))
  t.equal(db.inFlight, 1, 'one batch in flight at a time')
  t.equal(g.queued, 4)
  t.equal(g.committing, 1)
  let answered = false
  void first.then(() => { answered = true })
  await new Promise((resolve) => setImmediate(resolve))
  t.notOk(answered, 'nobody is answered before the commit')
  await db.commit()
  t.equal(await first, 'stored 1')
  t.same(db.batches, [[1], [2, 3, 4, 5]])
  await db.commit()
  t.same(await Promise.all(rest), ['stored 2', 'stored 3', 'stored 4', 'stored 5'])
  t.same(sizes, [1, 4])
  await g.idle()
  t.equal(g.queued + g.committing, 0)
})

t.test('batches hold at most maxBatch writes', async (t) => {
  const db = fakeDatabase()
  const g = createGroupCommit<number, string>({ maxBatch: 3, maxQueue: 1000, run: db.run, isOpFault: () => false })
  const all = Array.from({ length: 8 }, (_, i) => g.submit(i))
  while (db.inFlight > 0) await db.commit()
  await Promise.all(all)
  t.same(db.batches, [[0], [1, 2, 3], [4, 5, 6], [7]])
})

t.test('a full queue refuses one more write at once with 503 overloaded, and takes writes again once it drains', async (t) => {
  const db = fakeDatabase()
  let refused = 0
  const g = createGroupCommit<number, string>({ maxBatch: 10, maxQueue: 2, run: db.run, isOpFault: () => false, onRefused: () => { refused++ } })
  const accepted = [g.submit(1), g.submit(2), g.submit(3)]
  const over = await settled(g.submit(4))
  t.notOk(over.ok)
  t.ok(!over.ok && over.err instanceof TetherError && over.err.code === 'overloaded' && over.err.status === 503)
  t.equal(refused, 1)
  while (db.inFlight > 0) await db.commit()
  t.same(await Promise.all(accepted), ['stored 1', 'stored 2', 'stored 3'], 'nothing already accepted is lost')
  const again = g.submit(5)
  await db.commit()
  t.equal(await again, 'stored 5')
})

t.test('a write owed to work already accepted is queued even when the queue is full', async (t) => {
  const db = fakeDatabase()
  const g = createGroupCommit<number, string>({ maxBatch: 10, maxQueue: 1, run: db.run, isOpFault: () => false })
  const accepted = [g.submit(1), g.submit(2)]
  t.notOk((await settled(g.submit(3))).ok, 'a new write is refused')
  const owed = g.submit(4, true)
  t.equal(g.queued, 2)
  while (db.inFlight > 0) await db.commit()
  t.same(await Promise.all([...accepted, owed]), ['stored 1', 'stored 2', 'stored 4'])
})

t.test('a batch that fails on one write\'s data is run again one write at a time: only that write fails', async (t) => {
  const bad = new Error('violates check constraint')
  let splits = 0
  const { runs: batches, run } = scripted((ops) => ops.includes(13) ? bad : undefined)
  const g = createGroupCommit<number, string>({
    maxBatch: 10,
    maxQueue: 100,
    run,
    isOpFault: (err) => err === bad,
    onSplit: () => { splits++ }
  })
  const lone = g.submit(0)
  const results = [11, 12, 13, 14].map((n) => settled(g.submit(n)))
  await lone
  const out = await Promise.all(results)
  t.same(out.map((r) => r.ok ? r.value : 'failed'), ['stored 11', 'stored 12', 'failed', 'stored 14'])
  t.equal(splits, 1)
  t.same(batches, [[0], [11, 12, 13, 14], [11], [12], [13], [14]], 'the retries keep the order')
})

t.test('a batch that fails because the database is unavailable fails every write in it, and the next batch still runs', async (t) => {
  const db = fakeDatabase()
  const down = new Error('Connection terminated')
  const g = createGroupCommit<number, string>({ maxBatch: 10, maxQueue: 100, run: db.run, isOpFault: () => false })
  const first = settled(g.submit(1))
  const second = [settled(g.submit(2)), settled(g.submit(3))]
  await db.commit()
  await first
  await db.commit(down)
  const out = await Promise.all(second)
  t.same(out.map((r) => r.ok ? r.value : (r.err as Error).message), ['Connection terminated', 'Connection terminated'])
  t.same(db.batches, [[1], [2, 3]], 'no retry one by one against a database that is down')
  const later = g.submit(4)
  await db.commit()
  t.equal(await later, 'stored 4')
})

t.test('a batch the server failed for a deadlock is run once more whole, and answered from the retry', async (t) => {
  const deadlock = Object.assign(new Error('deadlock detected'), { code: '40P01' })
  const { runs, run } = scripted((_, n) => n === 2 ? deadlock : undefined)
  const g = createGroupCommit<number, string>({
    maxBatch: 10,
    maxQueue: 100,
    run,
    isOpFault: () => true,
    isRetryable: (err) => err === deadlock
  })
  const lone = g.submit(0)
  const pair = [g.submit(1), g.submit(2)]
  await lone
  t.same(await Promise.all(pair), ['stored 1', 'stored 2'])
  t.same(runs, [[0], [1, 2], [1, 2]], 'the same batch again, not one op at a time')
})

t.test('when the server fails during a one-by-one rerun, the rest of the batch fails at once instead of each waiting it out', async (t) => {
  const bad = Object.assign(new Error('check violation'), { code: '23514' })
  const down = new Error('Connection terminated')
  const { runs, run } = scripted((ops) => ops.length > 1 && ops.includes(3) ? bad : ops.length === 1 && ops[0] === 2 ? down : undefined)
  const g = createGroupCommit<number, string>({
    maxBatch: 10,
    maxQueue: 100,
    run,
    isOpFault: (err) => err === bad
  })
  const lone = g.submit(0)
  const rest = [1, 2, 3, 4].map((n) => settled(g.submit(n)))
  await lone
  const out = await Promise.all(rest)
  t.same(out.map((r) => r.ok ? r.value : (r.err as Error).message), ['stored 1', 'Connection terminated', 'Connection terminated', 'Connection terminated'])
  t.same(runs, [[0], [1, 2, 3, 4], [1], [2]], 'nothing run after the server failed')
})

t.test('a callback that throws leaves nobody waiting, and the queue goes on', async (t) => {
  const g = createGroupCommit<number, string>({
    maxBatch: 10,
    maxQueue: 100,
    run: scripted((ops) => ops.includes(9) ? new Error('bad') : undefined).run,
    isOpFault: () => { throw new Error('isOpFault bug') }
  })
  const lone = g.submit(0)
  const doomed = [settled(g.submit(8)), settled(g.submit(9))]
  await lone
  const out = await Promise.all(doomed)
  t.ok(out.every((r) => !r.ok), 'both answered (with an error), none left hanging')
  t.equal(await g.submit(1), 'stored 1', 'the next batch runs')
})
