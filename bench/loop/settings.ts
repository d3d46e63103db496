/**
 * The settings of bench:loop, from the environment (the variables are listed in bench/loop.ts
 * and docs/benchmarks.md, "bench:loop").
 */
import { envReader, readCommonSettings, type CommonSettings } from '../lib/settings.js'
import type { LoopMode } from './gateway.js'
import { MAX_WINDOW_S, type ModeSettings } from './mode.js'

export interface Settings extends CommonSettings, ModeSettings {
  readonly users: number
  readonly messageChars: number
  readonly chatChars: number
  readonly modes: LoopMode[]
  readonly keepLogs: boolean
}

export function readSettings (): Settings {
  const r = envReader('bench')
  return {
    ...readCommonSettings(r, { fallback: 600, min: 60 }),
    measureS: r.number('BENCH_SECONDS', 15, 1, MAX_WINDOW_S),
    loginRate: r.number('BENCH_LOGIN_RATE', 200, 1, 5000),
    chatRate: r.number('BENCH_CHAT_RATE', 50, 1, 5000),
    probeMs: r.number('BENCH_PROBE_MS', 20, 1, 1000),
    users: r.number('BENCH_USERS', 50, 1, 1000),
    historyMessages: r.number('BENCH_HISTORY_MESSAGES', 40, 1, 1000),
    messageChars: r.number('BENCH_MESSAGE_CHARS', 4000, 1, 100_000),
    // MAX_BODY_BYTES is 64 KiB by default; JSON and headers need a little room.
    chatChars: r.number('BENCH_CHAT_CHARS', 3000, 1, 60_000),
    historyMaxTokens: r.number('BENCH_HISTORY_MAX_TOKENS', 16_000, 0, 10_000_000),
    threads: r.optional('BENCH_THREADS', 1, 256, true),
    threadMaxQueue: r.optional('BENCH_THREAD_MAX_QUEUE', 1, 1_000_000, true),
    threadTaskTimeoutMs: r.optional('BENCH_THREAD_TASK_TIMEOUT_MS', 10, 600_000, true),
    threadNice: r.optional('BENCH_THREAD_NICE', 0, 19, true),
    loginMaxOutstanding: r.number('BENCH_LOGIN_MAX_OUTSTANDING', 600, 1, 10_000),
    chatMaxOutstanding: r.number('BENCH_CHAT_MAX_OUTSTANDING', 200, 1, 10_000),
    requestTimeoutMs: r.number('BENCH_REQUEST_TIMEOUT_MS', 30_000, 100, 120_000),
    modes: r.choices('BENCH_MODES', 'pool,inline', ['pool', 'inline'] as const, { nonEmpty: true }),
    keepLogs: process.env.BENCH_KEEP_LOGS === '1',
    gatewayNodeArgs: r.words('BENCH_GATEWAY_NODE_ARGS'),
    // Passed as given; the gateway validates it (its default is 17, every earlier figure used 14).
    passwordHashCost: process.env.BENCH_PASSWORD_HASH_COST ?? '14'
  }
}
