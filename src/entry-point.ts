/**
 * What every process entry point does around its program, written once: read the config or
 * exit 78 with one line; log likely typos and deprecated names; end the process on an
 * uncaught error rather than limp on; on SIGTERM/SIGINT stop gracefully (a second signal exits
 * at once). src/main.ts, src/migrate.ts and src/llm-worker/main.ts call it with process.env;
 * nothing else installs process hooks.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Logger } from './log.js'
import { ConfigError, EXIT_CONFIG, type ConfigDefinition, type Env } from './settings/kernel.js'
import type { LogLevel } from './settings/parsers.js'

/** A long-running program: started once, stopped once on a signal. */
export interface Service {
  start: () => Promise<void> | void
  /** Graceful; the process exits 0 when it resolves. */
  stop: () => Promise<void>
}

interface Program<C> {
  readonly config: ConfigDefinition<C>
  readonly env: Env
  /** Pino bindings every line of this program carries (component, worker id...). */
  readonly logBindings?: (config: C) => Record<string, string>
}

/** The config, or one line on stderr and exit 78 (EX_CONFIG). */
function configOrExit<C> (program: Program<C>): C {
  try {
    return program.config.load(program.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    throw err
  }
}

/** Loaded after the config is known good, so a bad one is reported before pino loads. */
async function loggerFor<C extends { logLevel: LogLevel }> (program: Program<C>, config: C): Promise<Logger> {
  const { createLogger } = await import('./log.js')
  const base = createLogger(config.logLevel)
  const log = program.logBindings === undefined ? base : base.child(program.logBindings(config))
  for (const name of program.config.unknownVariables(program.env)) {
    log.warn({ variable: name }, `unknown environment variable ${name} (a typo?) is ignored`)
  }
  for (const { name, replacement, ignored } of program.config.deprecatedVariables(program.env)) {
    log.warn({ variable: name, replacement }, ignored
      ? `environment variable ${name} is deprecated and ignored: ${replacement} is set too`
      : `environment variable ${name} is deprecated: it is still read, but rename it to ${replacement}`)
  }
  return log
}

function stackOf (err: unknown): string {
  return err instanceof Error ? err.stack ?? err.message : String(err)
}

function exitOnUncaught (log: Logger): void {
  process.on('uncaughtException', (err) => {
    log.fatal({ err: stackOf(err) }, 'uncaught exception; exiting')
    process.exit(1)
  })
  process.on('unhandledRejection', (err) => {
    log.fatal({ err: stackOf(err) }, 'unhandled rejection; exiting')
    process.exit(1)
  })
}

/** Runs a service until a signal stops it. */
export async function runService<C extends { logLevel: LogLevel }> (
  program: Program<C> & { build: (config: C, log: Logger) => Promise<Service> }
): Promise<void> {
  const config = configOrExit(program)
  const log = await loggerFor(program, config)
  const service = await program.build(config, log)
  exitOnUncaught(log)

  let signalled = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) {
      log.warn({ signal }, 'second signal: exiting without waiting')
      process.exit(1)
    }
    signalled = true
    log.info({ signal }, 'signal received: graceful shutdown')
    service.stop().then(
      () => process.exit(0),
      (err: unknown) => { log.fatal({ err: stackOf(err) }, 'shutdown failed'); process.exit(1) }
    )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  try {
    await service.start()
  } catch (err) {
    // A setting found wrong only once running (a taken INSTANCE_ID): fix the config, exit 78.
    if (err instanceof ConfigError) {
      log.fatal({ variable: err.variable }, err.message)
      process.stderr.write(`${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    // Whatever was thrown (some libraries reject with undefined): one line that says why.
    const reason = err instanceof Error ? err.message : `non-error rejection: ${String(err)}`
    log.fatal({ err: stackOf(err) }, `start-up failed: ${reason}`)
    process.exit(1)
  }
}

/** Runs a task to its end: exit 0, or one line `<name>: <reason>` on stderr and exit 1. */
export async function runTask<C extends { logLevel: LogLevel }> (
  program: Program<C> & { name: string, run: (config: C, log: Logger) => Promise<void> }
): Promise<void> {
  const config = configOrExit(program)
  const log = await loggerFor(program, config)
  try {
    await program.run(config, log)
  } catch (err) {
    process.stderr.write(`${program.name}: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  }
  process.exit(0)
}

/**
 * True when `moduleUrl` is the process's entry point rather than an import (a test imports
 * every module, and an entry point started on import would run a server or exit).
 */
export function isEntryPoint (moduleUrl: string): boolean {
  const script = process.argv[1]
  if (script === undefined) return false
  try { return realpathSync(script) === realpathSync(fileURLToPath(moduleUrl)) } catch { return false }
}
