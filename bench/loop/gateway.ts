/**
 * The gateway of bench:loop, with the settings that make the blocking work of a login storm and
 * of long histories happen, and with THREAD_INLINE on or off (bench/lib/gateway.ts starts it).
 */
import { LIMITS_LIFTED, linkEnv, startGateway, type Gateway, type LinkOptions } from '../lib/gateway.js'

export type LoopMode = 'pool' | 'inline'

export interface LoopGatewayOptions extends Omit<LinkOptions, 'port' | 'chatMode'> {
  readonly mode: LoopMode
  readonly logFile: string
  readonly readyTimeoutMs: number
  readonly historyMaxMessages: number
  readonly historyMaxTokens: number
  /** PASSWORD_HASH_COST (BENCH_PASSWORD_HASH_COST), passed as given. */
  readonly passwordHashCost: string
  /** Unset keeps the gateway's defaults (cores - 1, at most 4; 32; 5000 ms; nice 10). */
  readonly threads?: number
  readonly threadMaxQueue?: number
  readonly threadTaskTimeoutMs?: number
  readonly threadNice?: number
  /** Extra node flags for the gateway, e.g. `--cpu-prof` to see where its loop goes. */
  readonly nodeArgs?: readonly string[]
}

export function loopGatewayEnv (o: LoopGatewayOptions, port: number): Record<string, string> {
  const optional = (name: string, v: number | undefined): Record<string, string> => v === undefined ? {} : { [name]: String(v) }
  return {
    ...linkEnv({ ...o, port }),
    // Every login of the storm uses a correct password, but the limiter counts an attempt as a
    // failure until it succeeds, and all of them come from one address: the config's maximum
    // keeps 429 out of what is measured.
    LOGIN_MAX_FAILURES: '100000',
    // The scrypt cost every earlier bench:loop figure was measured at (2^14). The gateway's
    // default is now 2^17, eight times the work per hash: BENCH_PASSWORD_HASH_COST=17 measures
    // that (the storm then saturates the threads at a few dozen logins per second).
    PASSWORD_HASH_COST: o.passwordHashCost,
    ...LIMITS_LIFTED,
    // Long histories reach the token counter whole: the character budget is far above them,
    // so HISTORY_MAX_TOKENS is what trims (on a worker thread, or inline).
    HISTORY_MAX_MESSAGES: String(o.historyMaxMessages),
    HISTORY_MAX_CHARS: '10000000',
    HISTORY_MAX_TOKENS: String(o.historyMaxTokens),
    THREAD_INLINE: o.mode === 'inline' ? '1' : '0',
    ...optional('THREADS', o.threads),
    ...optional('THREAD_MAX_QUEUE', o.threadMaxQueue),
    ...optional('THREAD_TASK_TIMEOUT_MS', o.threadTaskTimeoutMs),
    ...optional('THREAD_NICE', o.threadNice)
  }
}

/** Its `readyAt` is when the lag monitor had just started (the measured window is placed after it). */
export async function startLoopGateway (o: LoopGatewayOptions): Promise<Gateway> {
  return await startGateway({ label: o.mode, env: (port) => loopGatewayEnv(o, port), logFile: o.logFile, readyTimeoutMs: o.readyTimeoutMs, nodeArgs: o.nodeArgs })
}
