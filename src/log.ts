import { pino, type Logger } from 'pino'
import type { LogLevel } from './config.js'

export type { Logger }

/** JSON lines on stdout: one event per line, so a supervisor's log shipper can parse them. */
export function createLogger (level: LogLevel): Logger {
  return pino({ level, base: { service: 'tether' } })
}

/** For tests and benches that want no output. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
