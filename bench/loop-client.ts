/**
 * The load of bench:loop, run as a child of bench/loop.js (fork, IPC), so its CPU and its event
 * loop are its own, never the gateway's nor the orchestrator's. One command per process:
 *   {cmd:'load', opts}  -> {type:'result', streams, cpu_percent}   logins and chats, open loop
 *   {cmd:'probe', opts} -> {type:'result', streams, cpu_percent, lag}  GET /api/health every few ms
 * The prober runs in a process of its own: a load generator busy with hundreds of requests per
 * second would add its own delays to the latencies it is meant to time.
 * It exits when its work is done, when the parent goes away, or after `maxLifeMs`.
 */
import { performance } from 'node:perf_hooks'
import { getRequest, postRequest } from './lib/http-client.js'
import { exitAfter, sendToParent as send } from './lib/ipc.js'
import { runStream, type StreamResult, type Window } from './loop/load.js'

export interface WindowSpec {
  /** Date.now() at which the measured window starts; the load starts at once (warm-up). */
  readonly startEpochMs: number
  readonly lengthMs: number
}

export interface LoadOpts {
  readonly host: string
  readonly port: number
  readonly window: WindowSpec
  readonly loginRatePerS: number
  readonly chatRatePerS: number
  readonly logins: ReadonlyArray<{ username: string, password: string }>
  /** One request each, sent in turn; sessions may repeat. */
  readonly chats: ReadonlyArray<{ sessionId: string, token: string }>
  /** Chat messages' texts, used in turn with `chats`. */
  readonly contents: readonly string[]
  readonly loginMaxOutstanding: number
  readonly chatMaxOutstanding: number
  readonly timeoutMs: number
}

export interface ProbeOpts {
  readonly host: string
  readonly port: number
  readonly window: WindowSpec
  readonly everyMs: number
  readonly maxOutstanding: number
  readonly timeoutMs: number
}

export type LoopCommand =
  | { cmd: 'load', opts: LoadOpts, maxLifeMs: number }
  | { cmd: 'probe', opts: ProbeOpts, maxLifeMs: number }

export interface LoopClientResult {
  type: 'result'
  streams: StreamResult[]
  cpu_percent: number
  /** The prober's view of /api/health's event_loop.lag_p99_ms in the window: last and largest seen. */
  lag?: { last_ms: number | undefined, max_ms: number | undefined, samples: number }
}

function toWindow (w: WindowSpec): Window {
  const startMs = performance.now() + (w.startEpochMs - Date.now())
  return { startMs, endMs: startMs + w.lengthMs }
}

async function load (o: LoadOpts): Promise<LoopClientResult> {
  const window = toWindow(o.window)
  const logins = o.logins.map((l) => postRequest(o.host, o.port, '/api/auth/login', JSON.stringify(l)))
  const chats = o.chats.map((c, i) => postRequest(o.host, o.port, '/api/chatbot/messages',
    JSON.stringify({ session_id: c.sessionId, content: o.contents[i % o.contents.length] }), true, { authorization: `Bearer ${c.token}` }))
  const streams = await Promise.all([
    runStream({ name: 'login', host: o.host, port: o.port, ratePerS: o.loginRatePerS, requests: logins, okStatus: 200, expect: '"token"', maxOutstanding: o.loginMaxOutstanding, timeoutMs: o.timeoutMs }, window),
    runStream({ name: 'chat', host: o.host, port: o.port, ratePerS: o.chatRatePerS, requests: chats, okStatus: 200, expect: 'echo: ', maxOutstanding: o.chatMaxOutstanding, timeoutMs: o.timeoutMs }, window)
  ])
  return { type: 'result', streams, cpu_percent: 0 }
}

async function probe (o: ProbeOpts): Promise<LoopClientResult> {
  const window = toWindow(o.window)
  let last: number | undefined
  let max: number | undefined
  let samples = 0
  const onBody = (body: Buffer): void => {
    try {
      const lag = (JSON.parse(body.toString('utf8')) as { event_loop?: { lag_p99_ms?: unknown } }).event_loop?.lag_p99_ms
      if (typeof lag !== 'number') return
      last = lag
      max = Math.max(max ?? 0, lag)
      samples++
    } catch { /* counted as a success already; a body without the field is not a lag sample */ }
  }
  const health = await runStream({
    name: 'health', host: o.host, port: o.port, ratePerS: 1000 / o.everyMs, requests: [getRequest(o.host, o.port, '/api/health')],
    okStatus: 200, expect: '"event_loop"', maxOutstanding: o.maxOutstanding, timeoutMs: o.timeoutMs, onBody
  }, window)
  return { type: 'result', streams: [health], cpu_percent: 0, lag: { last_ms: last, max_ms: max, samples } }
}

process.on('disconnect', () => process.exit(0))
process.once('message', (c: LoopCommand) => {
  // Whatever happens, this process does not outlive its budget.
  exitAfter('loop-client', c.maxLifeMs)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const work = c.cmd === 'load' ? load(c.opts) : probe(c.opts)
  work.then(async (result) => {
    const cpu = process.cpuUsage(cpu0)
    const wallS = (performance.now() - t0) / 1000
    await send({ ...result, cpu_percent: Math.round(((cpu.user + cpu.system) / 1e6 / wallS) * 100) })
    process.exit(0)
  }, async (err: unknown) => {
    await send({ type: 'error', message: (err as Error).message })
    process.exit(1)
  })
})
