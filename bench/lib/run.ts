/**
 * The life of one bench run, the same in every family: whatever ends it — the end of `main`,
 * SIGINT or SIGTERM, an uncaught failure, or the whole-run watchdog (BENCH_MAX_SECONDS) — every
 * child process is stopped (by pid, bench/lib/proc.ts) and then the cleanup stack runs, last
 * registered first (drop the database, remove a temp dir). It runs once; a second signal waits
 * for the same cleanup instead of starting another.
 */
import { stopAll } from './proc.js'

/** A cleanup task; a string it returns is a problem to print (e.g. "could not drop database ..."). */
export type CleanupTask = () => Promise<string | undefined | void> | string | undefined | void

export interface Run {
  /** Installs the SIGINT/SIGTERM handlers and arms the watchdog. */
  arm: (maxSeconds: number) => void
  /** Cancels the watchdog: the run has ended on its own. */
  disarm: () => void
  /** Pushes a task onto the cleanup stack. */
  defer: (task: CleanupTask) => void
  /** Stops every child, then runs the stack; the same promise for every caller. */
  cleanUp: () => Promise<void>
  /**
   * Runs `main` and exits with its code. A rejection is printed as one line, cleaned up after,
   * and exits 1. `exitAtOnce`: process.exit() rather than waiting for the event loop to empty
   * (bench:ws, whose WebSocket and inspector clients could otherwise hold it open).
   */
  exitWith: (main: () => Promise<number>, o: { exitAtOnce: boolean }) => void
}

/** Progress and problems go to stderr; stdout carries the markdown report only. */
export function log (line: string): void { process.stderr.write(`${line}\n`) }

/** `tag` starts every line the run prints (`bench`, `bench:ws`). Nothing starts until arm(). */
export function createRun (tag: string): Run {
  const tasks: CleanupTask[] = []
  let cleaning: Promise<void> | undefined
  let watchdog: NodeJS.Timeout | undefined

  async function cleanUp (): Promise<void> {
    cleaning ??= (async () => {
      await stopAll()
      for (const task of tasks.reverse()) {
        const problem = await task()
        if (typeof problem === 'string') log(`${tag}: ${problem}`)
      }
    })()
    await cleaning
  }

  function arm (maxSeconds: number): void {
    watchdog = setTimeout(() => {
      log(`${tag}: still running after ${maxSeconds} s (BENCH_MAX_SECONDS); stopping everything`)
      void cleanUp().finally(() => process.exit(2))
    }, maxSeconds * 1000)
    watchdog.unref()
    // 128 + the signal's number, as a shell reports it.
    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.on(signal, () => {
        log(`${tag}: ${signal}; stopping everything`)
        void cleanUp().finally(() => process.exit(code))
      })
    }
  }

  function exitWith (main: () => Promise<number>, o: { exitAtOnce: boolean }): void {
    const exit = (code: number): void => {
      if (o.exitAtOnce) process.exit(code)
      process.exitCode = code
    }
    main().then(exit, async (err: unknown) => {
      log(`${tag}: ${(err as Error).message}`)
      await cleanUp()
      exit(1)
    })
  }

  return { arm, disarm: () => { clearTimeout(watchdog) }, defer: (task) => { tasks.push(task) }, cleanUp, exitWith }
}
