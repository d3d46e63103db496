/**
 * The process entry point, and the only module that reads the environment, opens sockets
 * on its own behalf and installs signal handlers.
 */
import { ConfigError, EXIT_CONFIG, loadConfig, unknownVariables, type Config } from './config.js'
import { createLogger } from './log.js'

async function main (): Promise<void> {
  let config: Config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    throw err
  }
  const log = createLogger(config.logLevel)
  for (const name of unknownVariables(process.env)) {
    log.warn({ variable: name }, `unknown environment variable ${name} (a typo?) is ignored`)
  }

  // uWebSockets.js is loaded only now, after the config is known to be good.
  const { uwsBinding } = await import('./uws-native.js')
  const binding = uwsBinding()
  if (binding.native) log.info({ binary: binding.file }, 'uWebSockets.js native binary loaded')
  else log.error('uWebSockets.js is running its slow JavaScript FALLBACK: the native binary did not load for this platform/Node ABI; throughput will be a fraction of normal')

  const { createTether } = await import('./app.js')
  const tether = createTether(config, { log })

  process.on('uncaughtException', (err) => {
    log.fatal({ err: err.stack ?? String(err) }, 'uncaught exception; exiting')
    process.exit(1)
  })
  process.on('unhandledRejection', (err) => {
    log.fatal({ err: err instanceof Error ? err.stack : String(err) }, 'unhandled rejection; exiting')
    process.exit(1)
  })

  let signalled = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) {
      log.warn({ signal }, 'second signal: exiting without waiting')
      process.exit(1)
    }
    signalled = true
    log.info({ signal }, 'signal received: graceful shutdown')
    tether.stop().then(
      () => process.exit(0),
      (err: Error) => { log.fatal({ err: err.stack }, 'shutdown failed'); process.exit(1) }
    )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  try {
    await tether.start()
  } catch (err) {
    // Whatever was thrown (some libraries reject with undefined): one line that says why.
    const reason = err instanceof Error ? err.message : `non-error rejection: ${String(err)}`
    log.fatal({ err: err instanceof Error ? err.stack : String(err) }, `start-up failed: ${reason}`)
    process.exit(1)
  }
}

void main()
