/**
 * Child-process plumbing for the bench orchestrator: free ports, bounded waits, and a registry
 * so every process we start is stopped (by its own pid, never by name) when the run ends.
 */
import { spawn, fork, type ChildProcess, type SpawnOptions, type ForkOptions } from 'node:child_process'
import { createWriteStream, readFileSync } from 'node:fs'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export { sleep }

const children = new Set<ChildProcess>()

/** A port the kernel just handed out on 127.0.0.1; tiny race, acceptable for a bench script. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => { resolve(port) })
    })
  })
}

export interface Started {
  readonly child: ChildProcess
  readonly logFile: string
  /** Last lines of the child's output, for error messages. */
  tail: (lines?: number) => string
}

/** Spawns a program with stdout+stderr appended to `logFile`; registered for cleanup. */
export function start (cmd: string, args: string[], logFile: string, opts: SpawnOptions = {}): Started {
  const log = createWriteStream(logFile, { flags: 'a' })
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
  track(child)
  child.stdout?.pipe(log, { end: false })
  child.stderr?.pipe(log, { end: false })
  child.once('exit', () => { setImmediate(() => log.end()) })
  return { child, logFile, tail: (n = 20) => tailOf(logFile, n) }
}

/** Forks a Node module with an IPC channel; stdout/stderr go to `logFile`. */
export function forkNode (modulePath: string, args: string[], logFile: string, opts: ForkOptions = {}): Started {
  const log = createWriteStream(logFile, { flags: 'a' })
  const child = fork(modulePath, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  track(child)
  child.stdout?.pipe(log, { end: false })
  child.stderr?.pipe(log, { end: false })
  child.once('exit', () => { setImmediate(() => log.end()) })
  return { child, logFile, tail: (n = 20) => tailOf(logFile, n) }
}

function track (child: ChildProcess): void {
  children.add(child)
  child.once('exit', () => children.delete(child))
}

export function tailOf (file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no output)'
  }
}

export function isRunning (child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL; resolves when the process is gone (bounded). */
export async function stop (child: ChildProcess, graceMs = 5000): Promise<void> {
  if (!isRunning(child)) return
  const gone = new Promise<void>((resolve) => child.once('exit', () => { resolve() }))
  child.kill('SIGTERM')
  if (await within(gone, graceMs)) return
  child.kill('SIGKILL')
  await within(gone, 2000)
}

/** Stops every child still registered, in reverse start order. */
export async function stopAll (): Promise<void> {
  for (const child of [...children].reverse()) await stop(child, 3000)
}

/** Resolves true if `p` settles within `ms`, false otherwise (and never rejects). */
export async function within (p: Promise<unknown>, ms: number): Promise<boolean> {
  const ac = new AbortController()
  const timer = sleep(ms, false, { signal: ac.signal }).catch(() => false)
  const done = p.then(() => true, () => true)
  const won = await Promise.race([done, timer])
  ac.abort()
  return won
}

/** Polls `check` every `everyMs` until it returns true or `timeoutMs` passes. */
export async function waitUntil (check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<boolean> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try { if (await check()) return true } catch { /* not yet */ }
    if (Date.now() >= end) return false
    await sleep(everyMs)
  }
}

/** Resolves with the first IPC message satisfying `match`, or rejects after `timeoutMs` or on exit. */
export async function nextMessage<T> (child: ChildProcess, match: (m: unknown) => m is T, timeoutMs: number, what: string): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const onMessage = (m: unknown): void => { if (match(m)) { cleanup(); resolve(m) } }
    const onExit = (code: number | null, signal: string | null): void => {
      cleanup(); reject(new Error(`${what}: process exited (code ${code}, signal ${signal}) before answering`))
    }
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${what}: no answer within ${timeoutMs} ms`)) }, timeoutMs)
    function cleanup (): void {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

/** Resolves when a line matching `re` appears on the child's stdout, rejects on timeout or exit. */
export async function waitForLine (child: ChildProcess, re: RegExp, timeoutMs: number, what: string): Promise<void> {
  return await new Promise<void>((resolve, reject) => {
    let buf = ''
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('utf8')
      if (re.test(buf)) { cleanup(); resolve() }
      if (buf.length > 65536) buf = buf.slice(-4096)
    }
    const onExit = (code: number | null, signal: string | null): void => {
      cleanup(); reject(new Error(`${what}: exited (code ${code}, signal ${signal}) before it was ready`))
    }
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${what}: not ready within ${timeoutMs} ms`)) }, timeoutMs)
    function cleanup (): void {
      clearTimeout(timer)
      child.stdout?.off('data', onData)
      child.off('exit', onExit)
    }
    child.stdout?.on('data', onData)
    child.once('exit', onExit)
  })
}
