/**
 * uWebSockets.js falls back to a slow pure-JavaScript implementation, with only a console
 * warning, when its native binary does not load (wrong glibc, Node ABI or platform). Tether
 * checks which one is in use so that the fallback is a loud, logged fact, never a surprise
 * in production throughput.
 */
import { createRequire } from 'node:module'

export interface UwsBinding {
  native: boolean
  /** The .node file in use, or null for the JavaScript fallback. */
  file: string | null
}

export function uwsBinding (): UwsBinding {
  const require = createRequire(import.meta.url)
  require('uWebSockets.js')
  const file = Object.keys(require.cache).find((k) => /uws_[^/\\]+\.node$/.test(k)) ?? null
  return { native: file !== null, file }
}
