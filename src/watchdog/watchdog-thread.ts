/**
 * The watchdog thread's body. It runs in its own thread, so it keeps running when the main
 * event loop is blocked: it reads the heartbeat the main thread writes; past
 * WATCHDOG_STALL_MS it writes one JSON log line straight to stdout (the main thread's logger
 * is stuck with its loop) and, when WATCHDOG_EXIT is on, ends the process so that its
 * supervisor restarts it.
 *
 * The function is self-contained and started from its own source text (Worker `eval`): the
 * thread then needs no module loading, so it is watching within milliseconds of start(), with
 * or without a TypeScript loader in the process.
 */
import type { WatchdogThreadData } from './shared-state.js'

export function watchdogThreadMain (data: WatchdogThreadData & { slot: Record<string, number>, signal: string, exitStatus: number }): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { writeSync } = require('node:fs') as typeof import('node:fs')
  const shared = new BigInt64Array(data.shared)
  const slot = data.slot
  let reported = false

  setInterval(() => {
    const heartbeat = Number(Atomics.load(shared, slot.heartbeat as number))
    const stallMs = Date.now() - heartbeat
    if (stallMs < data.stallMs) {
      reported = false
      return
    }
    if (reported) return
    reported = true
    Atomics.store(shared, slot.reportedStallMs as number, BigInt(stallMs))
    const line = {
      level: 60,
      time: Date.now(),
      service: 'tether',
      msg: data.exitOnStall
        ? `event loop stalled for ${stallMs} ms: watchdog ending the process (${data.signal}, exit status ${data.exitStatus}) so its supervisor restarts it`
        : `event loop stalled for ${stallMs} ms (WATCHDOG_EXIT is off: not ending the process)`,
      stall_ms: stallMs,
      last_route: data.routes[Number(Atomics.load(shared, slot.route as number))] ?? null,
      pending_requests: Number(Atomics.load(shared, slot.pendingRequests as number)),
      websockets: Number(Atomics.load(shared, slot.websockets as number)),
      rss_bytes: process.memoryUsage.rss(),
      heap_used_bytes: Number(Atomics.load(shared, slot.heapUsed as number)),
      watchdog_exit: data.exitOnStall
    }
    writeSync(1, JSON.stringify(line) + '\n')
    if (!data.exitOnStall) return
    process.kill(process.pid, data.signal)
    // If anything in the process installed a handler for the signal, the blocked loop can
    // never run it: end the process regardless a moment later.
    setTimeout(() => {
      writeSync(2, `watchdog: ${data.signal} did not end the process (a handler is installed); sending SIGKILL\n`)
      process.kill(process.pid, 'SIGKILL')
    }, 2000)
  }, data.checkMs)
}
