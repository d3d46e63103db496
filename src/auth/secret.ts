/**
 * The token-signing secret: AUTH_SECRET when set (required in production, enforced by the
 * config); otherwise generated once and kept in DATA_DIR/auth-secret so that tokens survive a
 * restart of a development server. Saying so in the log is the point: nobody should run
 * production on a generated secret without knowing.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Logger } from '../log.js'

export function resolveAuthSecret (options: { configured: string | undefined, dataDir: string, log: Logger }): string {
  if (options.configured !== undefined) return options.configured
  const dir = resolve(options.dataDir)
  const file = join(dir, 'auth-secret')
  if (existsSync(file)) {
    const secret = readFileSync(file, 'utf8').trim()
    if (secret.length >= 32) {
      options.log.info({ file }, 'AUTH_SECRET not set: using the generated secret kept in DATA_DIR (set AUTH_SECRET in production)')
      return secret
    }
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const secret = randomBytes(32).toString('hex')
  writeFileSync(file, secret + '\n', { mode: 0o600 })
  options.log.warn({ file }, 'AUTH_SECRET not set: generated a new secret and kept it in DATA_DIR (set AUTH_SECRET in production)')
  return secret
}
