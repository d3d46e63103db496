/**
 * The settings of bench:chat, from the environment (the variables are listed in bench/chat.ts
 * and docs/benchmarks.md, "bench:chat").
 */
import { envReader, readCommonSettings, type CommonSettings } from '../lib/settings.js'

export type Phase = 'ceiling' | 'relay' | 'persistent' | 'pg-ceiling' | 'heap'
const PHASES: readonly Phase[] = ['ceiling', 'relay', 'persistent', 'pg-ceiling', 'heap']

export interface Settings extends CommonSettings {
  readonly measureS: number
  readonly warmupS: number
  readonly concurrency: number[]
  readonly sessions: number
  readonly phases: Set<Phase>
  readonly heapRequests: number
  readonly echoChunks: number
  /** BENCH_WORKER_ANNOUNCE=1: the echo worker announces itself, so chats go to its own topic with an ack each (presence on). */
  readonly workerAnnounce: boolean
  /** BENCH_MQTT_PROTOCOL: the gateway's MQTT_PROTOCOL (auto, 5, 3.1.1). */
  readonly mqttProtocol: string
  readonly dbPoolSize: number | undefined
  readonly gatewayNodeArgs: string[]
}

export function readSettings (): Settings {
  const r = envReader('bench')
  return {
    ...readCommonSettings(r, { fallback: 600, min: 10 }),
    measureS: r.number('BENCH_SECONDS', 8, 0.5, 120),
    warmupS: r.number('BENCH_WARMUP_SECONDS', 2, 0, 60),
    concurrency: r.ints('BENCH_CONCURRENCY', '1,64,256', { min: 1, max: 4096 }),
    // Persistent mode makes every one of them through the API, so keep the count sane.
    sessions: r.number('BENCH_SESSIONS', 256, 1, 10_000),
    phases: new Set(r.choices('BENCH_PHASES', PHASES.join(','), PHASES, { aliases: { gateway: ['relay', 'persistent'] } })),
    heapRequests: r.number('BENCH_HEAP_REQUESTS', 10_000, 1, 50_000),
    echoChunks: r.number('ECHO_CHUNKS', 0, 0, 1000),
    workerAnnounce: r.number('BENCH_WORKER_ANNOUNCE', 0, 0, 1) === 1,
    mqttProtocol: r.choices('BENCH_MQTT_PROTOCOL', 'auto', ['auto', '5', '3.1.1'])[0] ?? 'auto',
    gatewayNodeArgs: r.words('BENCH_GATEWAY_NODE_ARGS'),
    dbPoolSize: r.optional('BENCH_DB_POOL_SIZE', 1, 90, false)
  }
}
