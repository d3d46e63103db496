/**
 * Group commit: writes queue, and while one batch commits the next gathers. A lone write goes
 * at once (no fixed delay at low load); under load each batch takes whatever queued while the
 * previous one committed, so the number of commits per second stays about the same while the
 * writes per commit grow. A caller is answered only when its batch's statement has returned,
 * that is after COMMIT: nothing is acknowledged before it is durable.
 *
 * Bounded: at most `maxBatch` writes per batch, at most `maxQueue` waiting; one more is refused
 * at once with 503 `overloaded` (waiting longer would only move the failure to the acquire or
 * statement timeout, with the queue's memory held meanwhile). A write submitted as `owed` (the
 * end of work already accepted, such as an answer the model has produced) is queued even then:
 * it is bounded by what was accepted, and refusing it would lose that work.
 *
 * A batch that fails as a whole because of one write's data (a constraint, a value the server
 * refuses) is run again one write at a time, in order, so that only the writes at fault fail. A
 * batch that fails because the database is unavailable fails every write in it: the statement
 * rolled back, so none of them is stored.
 */
import { TetherError } from '../errors.js'

export interface GroupCommitOptions<Op, R> {
  maxBatch: number
  maxQueue: number
  /** One batch as one statement (or transaction): one result per op, in order. */
  run: (ops: Op[]) => Promise<R[]>
  /** True when a failed batch may be the fault of some of its ops rather than of the server. */
  isOpFault: (err: unknown) => boolean
  onBatch?: (size: number, seconds: number) => void
  /** A batch failed on one op's data and is being run one op at a time. */
  onSplit?: (size: number) => void
  onRefused?: () => void
}

export interface GroupCommit<Op, R> {
  submit: (op: Op, owed?: boolean) => Promise<R>
  /** Writes waiting for a batch. */
  readonly queued: number
  /** Writes in the batch being committed. */
  readonly committing: number
  /** Resolves once nothing is queued or committing. */
  idle: () => Promise<void>
}

interface Waiting<Op, R> {
  op: Op
  resolve: (result: R) => void
  reject: (err: unknown) => void
}

export function createGroupCommit<Op, R> (options: GroupCommitOptions<Op, R>): GroupCommit<Op, R> {
  let queue: Array<Waiting<Op, R>> = []
  let committing = 0
  let idleWaiters: Array<() => void> = []

  async function runBatch (batch: Array<Waiting<Op, R>>): Promise<void> {
    const started = performance.now()
    try {
      const results = await options.run(batch.map((w) => w.op))
      options.onBatch?.(batch.length, (performance.now() - started) / 1000)
      batch.forEach((w, i) => { w.resolve(results[i] as R) })
    } catch (err) {
      if (batch.length === 1 || !options.isOpFault(err)) {
        for (const w of batch) w.reject(err)
        return
      }
      options.onSplit?.(batch.length)
      for (const w of batch) {
        try {
          const [result] = await options.run([w.op])
          w.resolve(result as R)
        } catch (own) {
          w.reject(own)
        }
      }
    }
  }

  function pump (): void {
    if (committing > 0) return
    if (queue.length === 0) {
      const waiters = idleWaiters
      idleWaiters = []
      for (const w of waiters) w()
      return
    }
    const batch = queue.length <= options.maxBatch ? queue : queue.slice(0, options.maxBatch)
    queue = batch === queue ? [] : queue.slice(options.maxBatch)
    committing = batch.length
    void runBatch(batch).finally(() => {
      committing = 0
      pump()
    })
  }

  return {
    submit (op, owed = false) {
      if (!owed && queue.length >= options.maxQueue) {
        options.onRefused?.()
        return Promise.reject(new TetherError('overloaded', 'Too many writes are waiting for the database; retry later.', 1))
      }
      const promise = new Promise<R>((resolve, reject) => { queue.push({ op, resolve, reject }) })
      pump()
      return promise
    },
    get queued () { return queue.length },
    get committing () { return committing },
    idle () {
      if (queue.length === 0 && committing === 0) return Promise.resolve()
      return new Promise<void>((resolve) => { idleWaiters.push(resolve) })
    }
  }
}
