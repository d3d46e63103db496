/**
 * What start-up built, in the order it was built, so that one unwind (in reverse) undoes it:
 * the same order for a graceful stop and for a start that failed half-way. A step that
 * throws is logged and the unwind goes on, so one stuck part cannot keep the rest open.
 */
import type { Logger } from '../log.js'

export interface TeardownStack {
  /** Registers how to undo what was just started. */
  push: (name: string, undo: () => Promise<void> | void) => void
  /** Undoes everything pushed, newest first; resolves when all steps have run. */
  unwind: () => Promise<void>
  /** Names of the steps still to undo, newest first (for logs and tests). */
  readonly pending: readonly string[]
}

export function createTeardownStack (log: Logger): TeardownStack {
  const steps: Array<{ name: string, undo: () => Promise<void> | void }> = []
  return {
    push (name, undo) { steps.push({ name, undo }) },
    async unwind () {
      for (let step = steps.pop(); step !== undefined; step = steps.pop()) {
        try {
          await step.undo()
        } catch (err) {
          log.error({ step: step.name, err: err instanceof Error ? err.stack : String(err) }, `stopping ${step.name} failed; going on with the rest`)
        }
      }
    },
    get pending () { return steps.map((s) => s.name).reverse() }
  }
}
