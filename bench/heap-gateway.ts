/**
 * The gateway in-process, for the heap-per-pending-request phase. Forked by bench/chat.js with
 * `node --expose-gc` so it can collect garbage before each heap reading. IPC:
 *   {cmd:'start', dir, env} -> {type:'started', port}   (dir holds app.js and config.js; env carries
 *                              DATABASE_URL of the bench database and CHAT_MODE=relay)
 *   {cmd:'measure'}     -> {type:'memory', usage}   (after two full GCs)
 *   {cmd:'stop'}        -> {type:'stopped'} and exit
 * The gateway modules are imported by path at run time, so this file compiles (and the phase
 * fails with a clear message) before src/app.ts exists.
 */
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { exitAfter, sendToParent as send } from './lib/ipc.js'

interface Tether {
  readonly port: number
  start: () => Promise<void>
  stop: () => Promise<void>
}
interface AppModule { createTether: (config: unknown) => Tether }
interface ConfigModule { loadConfig: (env: Record<string, string>) => unknown }

type Command = { cmd: 'start', dir: string, env: Record<string, string> } | { cmd: 'measure' } | { cmd: 'stop' }

let tether: Tether | undefined

async function fullGc (): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('global.gc is missing: run with node --expose-gc')
  // Two passes with a turn between them so finalizers and weak callbacks run before the second.
  gc()
  await nextTurn()
  gc()
}

async function handle (c: Command): Promise<void> {
  if (c.cmd === 'start') {
    const app = await import(pathToFileURL(join(c.dir, 'app.js')).href) as AppModule
    const config = await import(pathToFileURL(join(c.dir, 'config.js')).href) as ConfigModule
    if (typeof app.createTether !== 'function') throw new Error('dist/src/app.js does not export createTether')
    if (typeof config.loadConfig !== 'function') throw new Error('dist/src/config.js does not export loadConfig')
    tether = app.createTether(config.loadConfig(c.env))
    await tether.start()
    await send({ type: 'started', port: tether.port })
  } else if (c.cmd === 'measure') {
    await fullGc()
    await send({ type: 'memory', usage: process.memoryUsage() })
  } else {
    await tether?.stop()
    await send({ type: 'stopped' })
    process.exit(0)
  }
}

// Bounded life: the orchestrator's phase takes well under this.
exitAfter('heap-gateway', 300_000)
process.on('disconnect', () => process.exit(0))
process.on('message', (m: Command) => {
  handle(m).catch(async (err: unknown) => {
    await send({ type: 'error', message: (err as Error).stack ?? String(err) })
    process.exit(1)
  })
})
