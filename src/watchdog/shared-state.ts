/**
 * The memory the main thread and the watchdog thread share: the main thread writes, the
 * watchdog reads (and raises one flag). BigInt64 slots so epoch milliseconds never overflow
 * and every read and write is a single atomic operation.
 */
export const SLOT = {
  /** Epoch ms of the main thread's last heartbeat. */
  heartbeat: 0,
  /** Index (into the route list) of the route most recently entered; 0: none yet. */
  route: 1,
  pendingRequests: 2,
  websockets: 3,
  /** V8 heap used by the main thread, bytes (the watchdog can only see its own heap). */
  heapUsed: 4,
  /** Set to the stall length by the watchdog when it reported a stall; cleared by the main thread. */
  reportedStallMs: 5
} as const

export const SLOTS = 6

export interface WatchdogThreadData {
  shared: SharedArrayBuffer
  routes: string[]
  stallMs: number
  checkMs: number
  exitOnStall: boolean
}

/**
 * The watchdog ends the process with this signal: a blocked main thread cannot run an exit
 * handler, and process.exit() in a worker ends only the worker. Nothing in Tether handles
 * SIGUSR2, so the kernel's default applies: the process ends, status 128 + 12 = 140.
 */
export const WATCHDOG_SIGNAL = 'SIGUSR2'
export const WATCHDOG_EXIT_STATUS = 140
