/**
 * The load generator, run as a child of bench/chat.js (fork, IPC) so its CPU is its own process
 * and never the orchestrator's or the gateway's. One command per process:
 *   {cmd:'mqtt', opts}  -> {type:'result', result}       raw MQTT ceiling run
 *   {cmd:'http', opts}  -> {type:'result', result}       HTTP closed-loop run
 *   {cmd:'pg', opts}    -> {type:'result', result}       PostgreSQL ceiling run (the chat's two statements);
 *                          its pool stays open until {cmd:'close'} (or the parent leaves)
 *   {cmd:'hold', opts}  -> {type:'held', ...}, then {cmd:'abort'} -> {type:'aborted', ...}
 * It exits when its work is done, when the parent goes away, or after `maxLifeMs`.
 */
import { performance } from 'node:perf_hooks'
import { exitAfter, sendToParent as send } from './lib/ipc.js'
import { runMqttCeiling, type MqttLoadOptions } from './chat/mqtt-ceiling.js'
import { runHttpLoad, holdRequests, type HttpLoadOptions, type HoldOptions } from './chat/http-load.js'
import { runPgCeiling, type PgLoadOptions } from './chat/pg-ceiling.js'

export type LoadCommand =
  | { cmd: 'mqtt', opts: MqttLoadOptions, maxLifeMs: number }
  | { cmd: 'http', opts: HttpLoadOptions, maxLifeMs: number }
  | { cmd: 'pg', opts: PgLoadOptions, maxLifeMs: number }
  | { cmd: 'hold', opts: HoldOptions, maxLifeMs: number }

async function handle (c: LoadCommand): Promise<void> {
  // Whatever happens, this process does not outlive its budget.
  exitAfter('load-client', c.maxLifeMs)
  if (c.cmd === 'mqtt' || c.cmd === 'http' || c.cmd === 'pg') {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    const pg = c.cmd === 'pg' ? await runPgCeiling(c.opts) : undefined
    const result = pg !== undefined ? pg.result : c.cmd === 'mqtt' ? await runMqttCeiling(c.opts) : await runHttpLoad(c.opts as HttpLoadOptions)
    const cpu = process.cpuUsage(cpu0)
    const wallS = (performance.now() - t0) / 1000
    // Its own CPU, since /proc/<pid> of an exiting process cannot be read reliably afterwards.
    await send({ type: 'result', result, cpu_percent: Math.round(((cpu.user + cpu.system) / 1e6 / wallS) * 100) })
    if (pg === undefined) process.exit(0)
    process.on('message', (m: { cmd?: string }) => {
      if (m.cmd === 'close') void pg.close().finally(() => process.exit(0))
    })
    return
  }
  const hold = await holdRequests(c.opts)
  await send({ type: 'held', sent: hold.sent, early: hold.early.counts, failures: hold.failures.counts })
  process.on('message', (m: { cmd?: string }) => {
    if (m.cmd === 'status') {
      void send({ type: 'status', early: hold.early.counts, failures: hold.failures.counts })
    } else if (m.cmd === 'abort') {
      const early = { ...hold.early.counts }
      const failures = { ...hold.failures.counts }
      hold.abort()
      void send({ type: 'aborted', early, failures }).then(() => process.exit(0))
    }
  })
}

process.on('disconnect', () => process.exit(0))
process.once('message', (m: LoadCommand) => {
  handle(m).catch(async (err: unknown) => {
    await send({ type: 'error', message: (err as Error).message })
    process.exit(1)
  })
})
