/**
 * The gateway process: `npm start`. The only module that passes the environment to the
 * gateway; entry-point.ts does the config, the process hooks and the signals.
 */
import { GATEWAY_CONFIG } from './config.js'
import { runService } from './entry-point.js'

// Runs whenever loaded: this file is only ever a process's entry point (the import-all test skips it).
void runService({
  config: GATEWAY_CONFIG,
  env: process.env,
  async build (config, log) {
    // uWebSockets.js is loaded only now, after the config is known to be good.
    const { uwsBinding } = await import('./uws-native.js')
    const binding = uwsBinding()
    if (binding.native) log.info({ binary: binding.file }, 'uWebSockets.js native binary loaded')
    else log.error('uWebSockets.js is running its slow JavaScript FALLBACK: the native binary did not load for this platform/Node ABI; throughput will be a fraction of normal')
    const { createTether } = await import('./app.js')
    return createTether(config, { log })
  }
})
