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
  /**
   * True when a failed batch may be the fault of some of its ops (a constraint, a value the
   * server refused) rather than of the server or the statement: only then is it run again one
   * op at a time. It must be false for anything that can happen after the statement committed.
   */
  isOpFault: (err: unknown) => boolean
  /** True for a failure worth running the whole batch once more (a deadlock broken by the server). */
  isRetryable?: (err: unknown) => boolean
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
  /** The batch being committed (its writes' split reruns included), or null. */
  let current: Array<Waiting<Op, R>> | null = null
  let idleWaiters: Array<() => void> = []

  async function attempt (ops: Op[]): Promise<{ ok: true, results: R[] } | { ok: false, err: unknown }> {
    try {
      return { ok: true, results: await options.run(ops) }
    } catch (err) {
      return { ok: false, err }
    }
  }

  async function runBatch (batch: Array<Waiting<Op, R>>): Promise<void> {
    const started = performance.now()
    const ops = batch.map((w) => w.op)
    let outcome = await attempt(ops)
    if (!outcome.ok && options.isRetryable?.(outcome.err) === true) outcome = await attempt(ops)
    if (!outcome.ok) {
      await failed(batch, outcome.err)
      return
    }
    // Outside any retry: from here on the rows are stored, whatever a callback does. The next
    // batch (what gathered meanwhile) starts before the callers hear back, so that what they
    // send next joins the batch after it, as it would under any load.
    const { results } = outcome
    finish(batch)
    batch.forEach((w, i) => { w.resolve(results[i] as R) })
    options.onBatch?.(batch.length, (performance.now() - started) / 1000)
  }

  /** The batch in flight is over: the next one may start. Once per batch. */
  function finish (batch: Array<Waiting<Op, R>>): void {
    if (current !== batch) return
    current = null
    committing = 0
    pump()
  }

  /** A batch that failed: one op at a time when the fault may be one op's, else all of it. */
  async function failed (batch: Array<Waiting<Op, R>>, err: unknown): Promise<void> {
    if (batch.length === 1 || !options.isOpFault(err)) {
      for (const w of batch) w.reject(err)
      return
    }
    options.onSplit?.(batch.length)
    for (let i = 0; i < batch.length; i++) {
      const w = batch[i] as Waiting<Op, R>
      try {
        const [result] = await options.run([w.op])
        w.resolve(result as R)
      } catch (own) {
        w.reject(own)
        // The server, not this op: the rest would each wait out the same failure.
        if (!options.isOpFault(own)) {
          for (const rest of batch.slice(i + 1)) rest.reject(own)
          return
        }
      }
    }
  }

  function pump (): void {
    if (current !== null) return
    if (queue.length === 0) {
      const waiters = idleWaiters
      idleWaiters = []
      for (const w of waiters) w()
      return
    }
    const batch = queue.length <= options.maxBatch ? queue : queue.slice(0, options.maxBatch)
    queue = batch === queue ? [] : queue.slice(options.maxBatch)
    committing = batch.length
    current = batch
    runBatch(batch).catch((err: unknown) => {
      // A callback (onBatch, onSplit, isOpFault) threw: nobody in the batch may be left waiting.
      for (const w of batch) w.reject(err)
    }).finally(() => { finish(batch) })
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
      if (queue.length === 0 && current === null) return Promise.resolve()
      return new Promise<void>((resolve) => { idleWaiters.push(resolve) })
    }
  }
}
