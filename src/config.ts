/**
 * The one typed configuration object. Every environment variable Tether reads is declared in
 * SETTINGS below, next to its default, its unit and an example; `loadConfig()` validates all of
 * them at start-up and returns a frozen object. `main.ts` is the only caller that passes
 * `process.env`; tests pass plain objects.
 */
import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { isAddressOrNetwork, LOOPBACK_PROXIES } from './http/client-address.js'
import { ID_RULE, isValidId } from './ids.js'

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface Config {
  readonly port: number
  readonly host: string
  /** External broker; undefined means "run the embedded broker and the demo responder". */
  readonly mqttUrl: string | undefined
  readonly embeddedMqttPort: number
  readonly mqttTopicPrefix: string
  readonly instanceId: string
  readonly chatTimeoutMs: number
  readonly maxPending: number
  readonly maxPendingPerSession: number
  /** Chats in flight per user, all sessions and sockets together (fair share). */
  readonly maxPendingPerUser: number
  /** Sessions one user may create per minute (a token bucket of this size, refilled per minute). */
  readonly sessionCreatePerMinute: number
  /** Open WebSockets per user, both endpoints together. */
  readonly wsMaxPerUser: number
  /** Registrations per client address per hour. */
  readonly registerPerAddressPerHour: number
  /** Registrations hashing at once, queue included; 0: twice workerThreads. */
  readonly registerMaxConcurrent: number
  /** scrypt cost as log2(N) for new password hashes. */
  readonly passwordHashCost: number
  /** Largest hint payload passed on to sockets; larger hints are dropped and counted. */
  readonly hintMaxBytes: number
  /** Bytes an event-stream response may have buffered for a slow reader before it is ended. */
  readonly sseMaxBackpressure: number
  readonly maxBodyBytes: number
  readonly mqttKeepaliveS: number
  readonly mqttStaleAfterMs: number
  readonly mqttProbeTimeoutMs: number
  readonly mqttConnectTimeoutMs: number
  readonly mqttMaxReconnectAttempts: number
  readonly mqttBackoffBaseMs: number
  readonly mqttBackoffCapMs: number
  readonly shutdownGraceMs: number
  readonly logLevel: LogLevel
  readonly corsOrigins: readonly string[]
  readonly demoWorker: boolean
  /** NODE_ENV=production: secrets must be configured, never generated. */
  readonly production: boolean
  /** External PostgreSQL; undefined means "run the embedded server under dataDir". */
  readonly databaseUrl: string | undefined
  readonly dataDir: string
  readonly embeddedPgPort: number
  readonly dbPoolSize: number
  readonly dbAcquireTimeoutMs: number
  readonly dbStatementTimeoutMs: number
  readonly dbIdleInTxTimeoutMs: number
  readonly dbHealthIntervalMs: number
  /** undefined: generated and kept under dataDir (refused when production). */
  readonly authSecret: string | undefined
  readonly authTokenTtlS: number
  readonly loginMaxFailures: number
  readonly historyMaxMessages: number
  readonly historyMaxChars: number
  /** Token budget of the history (o200k_base), applied after the character budget; 0: off. */
  readonly historyMaxTokens: number
  /** Operator's patterns; a message matching any is refused. Empty: no screening. */
  readonly contentFilters: readonly ContentFilter[]
  readonly contentFilterTimeoutMs: number
  readonly workerThreads: number
  readonly workerNice: number
  readonly workerMaxQueue: number
  readonly workerTaskTimeoutMs: number
  /** Benchmarking only: worker tasks run on the event loop (no threads); refused in production. */
  readonly workerInline: boolean
  /**
   * Proxies (addresses or networks) whose X-Real-IP names the client; empty: none, the socket
   * peer is the client.
   */
  readonly trustProxy: readonly string[]
  readonly watchdogStallMs: number
  /** End the process on a stall (default: on in production). */
  readonly watchdogExit: boolean
  readonly lagDegradedMs: number
  /** RSS above this degrades health; 0: no limit. */
  readonly memorySoftLimitBytes: number
  /** Test-only routes (blocking the event loop on purpose); refused in production. */
  readonly testHooks: boolean
  readonly wsIdleTimeoutS: number
  readonly wsMaxBackpressure: number
  readonly wsMaxPayloadBytes: number
  readonly wsStatePerSecond: number
  readonly wsStateBurst: number
  /** persistent: authenticated, owner-checked, stored; relay: stateless pass-through (trusted networks). */
  readonly chatMode: 'persistent' | 'relay'
}

/** One content filter: the arguments of `new RegExp(source, flags)`, checked at start-up. */
export interface ContentFilter {
  readonly source: string
  readonly flags: string
}

/** Thrown by loadConfig; `message` is the single line printed before exiting with status 78. */
export class ConfigError extends Error {
  readonly variable: string
  constructor (variable: string, problem: string, example: string) {
    super(`config: ${variable} ${problem} (example: ${variable}=${example})`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

/** sysexits.h EX_CONFIG: supervisors can tell "fix the config" from "crashed". */
export const EXIT_CONFIG = 78

type Parse<T> = (raw: string) => T | { problem: string }

interface Setting<K extends keyof Config> {
  readonly env: string
  readonly key: K
  readonly fallback: Config[K] | (() => Config[K])
  readonly example: string
  readonly parse: Parse<Config[K]>
  readonly doc: string
}

function problem (p: string): { problem: string } { return { problem: p } }
function isProblem (v: unknown): v is { problem: string } {
  return typeof v === 'object' && v !== null && 'problem' in v && !Array.isArray(v)
}

function int (min: number, max: number): Parse<number> {
  return (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) return problem(`must be a whole number, got "${raw}"`)
    const n = Number(raw.trim())
    if (!Number.isSafeInteger(n) || n < min || n > max) return problem(`must be between ${min} and ${max}, got ${raw}`)
    return n
  }
}


function identifier (raw: string): string | { problem: string } {
  return isValidId(raw) ? raw : problem(`${ID_RULE}, got "${raw}"`)
}

function topicPrefix (raw: string): string | { problem: string } {
  // A prefix may have levels ("acme/llm") but never wildcards or empty levels.
  if (raw.length === 0 || raw.length > 128) return problem('must be 1 to 128 characters')
  if (/[+#\u0000]/.test(raw)) return problem(`must not contain MQTT wildcards (+, #) or NUL, got "${raw}"`)
  if (raw.startsWith('/') || raw.endsWith('/') || raw.includes('//') || raw.startsWith('$')) {
    return problem(`must not start with $ or / nor have empty levels, got "${raw}"`)
  }
  return raw
}

function mqttUrl (raw: string): string | { problem: string } {
  let u: URL
  // The value may hold a password: the problem never quotes it (it is printed and logged).
  try { u = new URL(raw) } catch { return problem('is not a URL (mqtt://[user:password@]host:port)') }
  if (u.protocol !== 'mqtt:' && u.protocol !== 'tcp:') return problem(`must use mqtt:// (got ${u.protocol}//)`)
  if (u.hostname === '') return problem('has no host')
  return raw
}

/**
 * TRUST_PROXY: off (0/false/empty), 1/true for a proxy on this host (loopback), or a comma list
 * of the proxies' addresses and networks ("10.0.0.5, 10.1.0.0/16").
 */
export function parseTrustProxy (raw: string): readonly string[] | { problem: string } {
  const v = raw.trim().toLowerCase()
  if (['0', 'false', 'no', 'off', ''].includes(v)) return Object.freeze([])
  if (['1', 'true', 'yes', 'on'].includes(v)) return LOOPBACK_PROXIES
  const entries = raw.split(',').map((e) => e.trim()).filter((e) => e !== '')
  const bad = entries.find((e) => !isAddressOrNetwork(e))
  if (bad !== undefined) return problem(`must be 0, 1 (a proxy on this host) or a comma list of proxy addresses or networks (a.b.c.d[/n], IPv6[/n]); "${bad}" is none of these`)
  return Object.freeze(entries)
}

function bool (raw: string): boolean | { problem: string } {
  const v = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off', ''].includes(v)) return false
  return problem(`must be one of 1/0/true/false/yes/no/on/off, got "${raw}"`)
}

const LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
function logLevel (raw: string): LogLevel | { problem: string } {
  const v = raw.trim().toLowerCase() as LogLevel
  return LEVELS.includes(v) ? v : problem(`must be one of ${LEVELS.join(', ')}, got "${raw}"`)
}

/** A JSON array of origins or a comma list; "*" allows any origin. */
export function parseOrigins (raw: string): readonly string[] | { problem: string } {
  const text = raw.trim()
  if (text === '') return []
  let list: unknown
  if (text.startsWith('[')) {
    try { list = JSON.parse(text) } catch (err) {
      return problem(`looks like a JSON array but does not parse (${(err as Error).message})`)
    }
    if (!Array.isArray(list) || !list.every((o) => typeof o === 'string')) {
      return problem('must be a JSON array of strings')
    }
  } else {
    list = text.split(',').map((s) => s.trim()).filter((s) => s !== '')
  }
  for (const origin of list as string[]) {
    if (origin === '*') continue
    let u: URL
    try { u = new URL(origin) } catch { return problem(`has an entry that is not an origin: "${origin}"`) }
    if (u.origin !== origin.replace(/\/$/, '')) return problem(`entry "${origin}" must be scheme://host[:port] only`)
  }
  return Object.freeze([...(list as string[])])
}

/**
 * CONTENT_FILTERS: a JSON array of regular expressions, each either a bare source
 * ("secret\\s+plan") or a literal with flags ("/secret plan/i"). A string that starts with "/"
 * and ends with "/" plus letters is always read as a literal. Every pattern is compiled here, so
 * a typo stops the start rather than every chat; compiling never runs the pattern, so it cannot
 * backtrack.
 */
export function parseContentFilters (raw: string): readonly ContentFilter[] | { problem: string } {
  let list: unknown
  try { list = JSON.parse(raw) } catch (err) {
    return problem(`must be a JSON array of strings; it does not parse (${(err as Error).message})`)
  }
  if (!Array.isArray(list) || !list.every((p) => typeof p === 'string')) return problem('must be a JSON array of strings')
  const filters: ContentFilter[] = []
  for (const [i, entry] of (list as string[]).entries()) {
    const literal = /^\/(.*)\/([a-z]*)$/s.exec(entry)
    const source = literal === null ? entry : literal[1] as string
    const flags = literal === null ? '' : literal[2] as string
    const where = `pattern ${i} (${JSON.stringify(entry)})`
    if (source === '') return problem(`${where} is empty and would refuse every message`)
    // g and y make a RegExp stateful or anchored; d only adds match indices. A filter asks
    // "does this occur anywhere", which none of them changes for the better.
    const unwanted = /[gyd]/.exec(flags)
    if (unwanted !== null) return problem(`${where} has the flag "${unwanted[0]}"; filters take only i, m, s, u and v`)
    try {
      new RegExp(source, flags)
    } catch (err) {
      return problem(`${where} is not a valid regular expression: ${regExpProblem(err, source, flags)}`)
    }
    filters.push(Object.freeze({ source, flags }))
  }
  return Object.freeze(filters)
}

/** V8's reason without its echo of the pattern, which may hold newlines (the problem is one line). */
function regExpProblem (err: unknown, source: string, flags: string): string {
  const message = err instanceof Error ? err.message : String(err)
  const echo = `Invalid regular expression: /${source}/${flags}: `
  return message.startsWith(echo) ? message.slice(echo.length) : message.replace(/\s+/g, ' ')
}

function databaseUrl (raw: string): string | { problem: string } {
  let u: URL
  try { u = new URL(raw) } catch { return problem('is not a URL') }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') return problem(`must use postgres:// (got ${u.protocol}//)`)
  if (u.hostname === '' && !u.searchParams.has('host')) return problem('has no host')
  return raw
}

function dir (raw: string): string | { problem: string } {
  return raw.trim() === '' || raw.includes('\u0000') ? problem('must be a directory path') : raw
}

function secret (raw: string): string | { problem: string } {
  // 32 characters of a random secret is 192+ bits for HMAC-SHA256; shorter is guessable.
  return raw.length >= 32 ? raw : problem(`must be at least 32 characters (got ${raw.length})`)
}

function chatMode (raw: string): 'persistent' | 'relay' | { problem: string } {
  return raw === 'persistent' || raw === 'relay' ? raw : problem(`must be "persistent" or "relay", got "${raw}"`)
}

function nodeEnv (raw: string): boolean | { problem: string } {
  return raw === 'production'
}

function host (raw: string): string | { problem: string } {
  return /^[A-Za-z0-9.:[\]-]+$/.test(raw) ? raw : problem(`is not a host name or address: "${raw}"`)
}

function s<K extends keyof Config> (setting: Setting<K>): Setting<K> { return setting }

/** Every variable, in the order the README documents them. */
export const SETTINGS = [
  s({ env: 'PORT', key: 'port', fallback: 8000, example: '8000', parse: int(0, 65535), doc: 'HTTP and WebSocket port (0 picks a free one).' }),
  s({ env: 'HOST', key: 'host', fallback: '0.0.0.0', example: '127.0.0.1', parse: host, doc: 'Address to listen on.' }),
  s({ env: 'MQTT_URL', key: 'mqttUrl', fallback: undefined, example: 'mqtt://127.0.0.1:1883', parse: mqttUrl, doc: 'External broker. Unset: embedded broker on loopback plus the demo responder.' }),
  s({ env: 'EMBEDDED_MQTT_PORT', key: 'embeddedMqttPort', fallback: 1883, example: '1883', parse: int(0, 65535), doc: 'Port of the embedded broker; if taken, a free port is used and printed.' }),
  s({ env: 'MQTT_TOPIC_PREFIX', key: 'mqttTopicPrefix', fallback: 'llm', example: 'llm', parse: topicPrefix, doc: 'First level(s) of every topic.' }),
  s({ env: 'INSTANCE_ID', key: 'instanceId', fallback: () => `tether-${randomBytes(6).toString('hex')}`, example: 'tether-a1', parse: identifier, doc: 'Names this gateway\'s reply topic and MQTT client id. Default: random per start.' }),
  s({ env: 'CHAT_TIMEOUT_MS', key: 'chatTimeoutMs', fallback: 90_000, example: '90000', parse: int(100, 3_600_000), doc: 'Deadline of a chat request; 504 llm_timeout when it passes.' }),
  s({ env: 'MAX_PENDING', key: 'maxPending', fallback: 10_000, example: '10000', parse: int(1, 1_000_000), doc: 'Chats in flight at once; more get 429.' }),
  s({ env: 'MAX_PENDING_PER_SESSION', key: 'maxPendingPerSession', fallback: 4, example: '4', parse: int(1, 10_000), doc: 'Chats in flight per session; more get 429.' }),
  s({ env: 'MAX_PENDING_PER_USER', key: 'maxPendingPerUser', fallback: 16, example: '16', parse: int(1, 1_000_000), doc: 'Chats in flight per user, over all their sessions and sockets; more get 429 too_many_requests. Fair share: no account can take the slots of MAX_PENDING (relay mode: per session id).' }),
  s({ env: 'SESSION_CREATE_PER_MINUTE', key: 'sessionCreatePerMinute', fallback: 30, example: '30', parse: int(1, 1_000_000), doc: 'Sessions one user may create in a burst, refilled at this many per minute; more get 429 too_many_requests with Retry-After.' }),
  s({ env: 'MAX_BODY_BYTES', key: 'maxBodyBytes', fallback: 65_536, example: '65536', parse: int(64, 16 * 1024 * 1024), doc: 'Largest request body; larger is 413.' }),
  s({ env: 'MQTT_KEEPALIVE_S', key: 'mqttKeepaliveS', fallback: 15, example: '15', parse: int(1, 3600), doc: 'MQTT keepalive, and the idle period after which the link is probed.' }),
  s({ env: 'MQTT_STALE_AFTER_MS', key: 'mqttStaleAfterMs', fallback: 5000, example: '5000', parse: int(50, 600_000), doc: 'With requests in flight, silence this long makes the link suspect (probe).' }),
  s({ env: 'MQTT_PROBE_TIMEOUT_MS', key: 'mqttProbeTimeoutMs', fallback: 2000, example: '2000', parse: int(10, 600_000), doc: 'How long a probe may take before the link is dropped and rebuilt.' }),
  s({ env: 'MQTT_CONNECT_TIMEOUT_MS', key: 'mqttConnectTimeoutMs', fallback: 5000, example: '5000', parse: int(50, 600_000), doc: 'How long one connection attempt (TCP + CONNACK) may take.' }),
  s({ env: 'MQTT_MAX_RECONNECT_ATTEMPTS', key: 'mqttMaxReconnectAttempts', fallback: 10, example: '10', parse: int(0, 1_000_000), doc: 'Failed reconnects before the link reports givingUp (it keeps retrying at the cap).' }),
  s({ env: 'MQTT_BACKOFF_BASE_MS', key: 'mqttBackoffBaseMs', fallback: 500, example: '500', parse: int(1, 600_000), doc: 'Base of the exponential reconnect backoff (full jitter).' }),
  s({ env: 'MQTT_BACKOFF_CAP_MS', key: 'mqttBackoffCapMs', fallback: 30_000, example: '30000', parse: int(1, 3_600_000), doc: 'Cap of the reconnect backoff; also the retry interval while givingUp.' }),
  s({ env: 'SHUTDOWN_GRACE_MS', key: 'shutdownGraceMs', fallback: 10_000, example: '10000', parse: int(0, 600_000), doc: 'On SIGTERM, how long in-flight chats may finish before they get 503.' }),
  s({ env: 'LOG_LEVEL', key: 'logLevel', fallback: 'info', example: 'info', parse: logLevel, doc: 'fatal, error, warn, info, debug, trace or silent.' }),
  s({ env: 'CORS_ORIGINS', key: 'corsOrigins', fallback: Object.freeze([]) as readonly string[], example: '["https://app.example.com"]', parse: parseOrigins, doc: 'Browser origins allowed by CORS: a JSON array or a comma list; "*" for any. Empty: no CORS headers.' }),
  s({ env: 'DEMO_WORKER', key: 'demoWorker', fallback: false, example: '1', parse: bool, doc: 'Run the demo responder against an external broker too (always on with the embedded one).' }),
  s({ env: 'NODE_ENV', key: 'production', fallback: false, example: 'production', parse: nodeEnv, doc: '"production" makes AUTH_SECRET required.' }),
  s({ env: 'DATABASE_URL', key: 'databaseUrl', fallback: undefined, example: 'postgres://tether:secret@127.0.0.1:5432/tether', parse: databaseUrl, doc: 'PostgreSQL. Unset: an embedded PostgreSQL server under DATA_DIR.' }),
  s({ env: 'DATA_DIR', key: 'dataDir', fallback: './data', example: './data', parse: dir, doc: 'Where the embedded PostgreSQL and the generated auth secret live.' }),
  s({ env: 'EMBEDDED_PG_PORT', key: 'embeddedPgPort', fallback: 54329, example: '54329', parse: int(0, 65535), doc: 'Port of the embedded PostgreSQL (loopback); if taken, a free port is used and printed.' }),
  s({ env: 'DB_POOL_SIZE', key: 'dbPoolSize', fallback: 10, example: '10', parse: int(1, 1000), doc: 'Connections in the PostgreSQL pool.' }),
  s({ env: 'DB_ACQUIRE_TIMEOUT_MS', key: 'dbAcquireTimeoutMs', fallback: 2000, example: '2000', parse: int(50, 600_000), doc: 'Longest wait for a pool connection; then 503 db_unavailable.' }),
  s({ env: 'DB_STATEMENT_TIMEOUT_MS', key: 'dbStatementTimeoutMs', fallback: 5000, example: '5000', parse: int(50, 3_600_000), doc: 'statement_timeout on every connection (and a client-side bound just above it).' }),
  s({ env: 'DB_IDLE_IN_TX_TIMEOUT_MS', key: 'dbIdleInTxTimeoutMs', fallback: 10_000, example: '10000', parse: int(100, 3_600_000), doc: 'idle_in_transaction_session_timeout on every connection.' }),
  s({ env: 'DB_HEALTH_INTERVAL_MS', key: 'dbHealthIntervalMs', fallback: 2000, example: '2000', parse: int(100, 600_000), doc: 'How often the database is probed, so recovery is seen even with no traffic.' }),
  s({ env: 'AUTH_SECRET', key: 'authSecret', fallback: undefined, example: '$(openssl rand -hex 32)', parse: secret, doc: 'HMAC key for tokens. Required with NODE_ENV=production; otherwise generated once and kept in DATA_DIR/auth-secret.' }),
  s({ env: 'AUTH_TOKEN_TTL_S', key: 'authTokenTtlS', fallback: 86_400, example: '86400', parse: int(60, 31_536_000), doc: 'Lifetime of a login token.' }),
  s({ env: 'LOGIN_MAX_FAILURES', key: 'loginMaxFailures', fallback: 10, example: '10', parse: int(1, 100_000), doc: 'Failed logins per username or client address within 60 s before 429 rate_limited.' }),
  s({ env: 'HISTORY_MAX_MESSAGES', key: 'historyMaxMessages', fallback: 20, example: '20', parse: int(0, 1000), doc: 'Earlier turns sent to the worker as history, at most.' }),
  s({ env: 'HISTORY_MAX_CHARS', key: 'historyMaxChars', fallback: 16_000, example: '16000', parse: int(0, 10_000_000), doc: 'Size budget of the history: trimmed from the oldest turn.' }),
  s({ env: 'HISTORY_MAX_TOKENS', key: 'historyMaxTokens', fallback: 3000, example: '3000', parse: int(0, 10_000_000), doc: 'Token budget of the history (o200k_base), counted on a worker thread after the character budget; trimmed from the oldest turn. 0: no token trimming.' }),
  s({ env: 'WORKER_THREADS', key: 'workerThreads', fallback: () => Math.max(1, Math.min(4, availableParallelism() - 1)), example: '2', parse: int(1, 256), doc: 'Worker threads for blocking work (password hashing, history token counting, content filters). Default: cores minus one, so the event loop keeps a core (on 2 cores, 2 scrypt threads starved it: bench:loop), at least 1, at most 4.' }),
  s({ env: 'WORKER_NICE', key: 'workerNice', fallback: 10, example: '10', parse: int(0, 19), doc: 'How much lower the worker threads\' CPU priority is than the event loop\'s (nice(2) units, per thread on Linux; 0: the same), so that on a busy machine password hashing waits for the loop rather than the loop for it.' }),
  s({ env: 'WORKER_MAX_QUEUE', key: 'workerMaxQueue', fallback: 32, example: '32', parse: int(1, 1_000_000), doc: 'Tasks waiting for a worker thread; more get 503 overloaded at once (a long queue only lets tasks wait until their deadline kills them).' }),
  s({ env: 'CHAT_MODE', key: 'chatMode', fallback: 'persistent', example: 'persistent', parse: chatMode, doc: '"persistent": chats need a token and an owned session and are stored. "relay": no token, any well-formed session id, nothing stored (for trusted networks that keep history elsewhere, and for measuring what persistence costs).' }),
  s({ env: 'TRUST_PROXY', key: 'trustProxy', fallback: Object.freeze([]) as readonly string[], example: '127.0.0.1,10.0.0.0/8', parse: parseTrustProxy, doc: 'Reverse proxies whose X-Real-IP header names the client (for the per-address limits): a comma list of addresses and networks, or 1 for a proxy on this host (loopback). The header is believed only from those peers and only when it holds one valid address. Off by default.' }),
  s({ env: 'WATCHDOG_STALL_MS', key: 'watchdogStallMs', fallback: 5000, example: '5000', parse: int(100, 600_000), doc: 'An event loop blocked this long is reported by the watchdog thread (and the process ended if WATCHDOG_EXIT).' }),
  s({ env: 'WATCHDOG_EXIT', key: 'watchdogExit', fallback: false, example: '1', parse: bool, doc: 'End the process (SIGUSR2, exit status 140) when the loop stalls, so the supervisor restarts it. Default: on with NODE_ENV=production, off otherwise.' }),
  s({ env: 'EVENT_LOOP_LAG_DEGRADED_MS', key: 'lagDegradedMs', fallback: 200, example: '200', parse: int(1, 600_000), doc: 'Event-loop delay p99 (30 s window) above this makes health degraded.' }),
  s({ env: 'MEMORY_SOFT_LIMIT_MB', key: 'memorySoftLimitBytes', fallback: 0, example: '1024', parse: (raw) => { const n = int(0, 1_048_576)(raw); return typeof n === 'number' ? n * 1024 * 1024 : n }, doc: 'Resident memory above this makes health degraded; 0: no limit.' }),
  s({ env: 'TETHER_TEST_HOOKS', key: 'testHooks', fallback: false, example: '1', parse: bool, doc: 'Test-only: enables POST /__test/block-event-loop. Refused with NODE_ENV=production.' }),
  s({ env: 'WS_IDLE_TIMEOUT_S', key: 'wsIdleTimeoutS', fallback: 32, example: '32', parse: int(8, 960), doc: 'WebSocket idle timeout: a peer that sends nothing, not even a pong, for this long is closed, within 2x this. The gateway pings each socket at its own phase often enough (every 6 s with 32) that uWebSockets.js pings only peers that stopped answering.' }),
  s({ env: 'WS_MAX_BACKPRESSURE', key: 'wsMaxBackpressure', fallback: 262_144, example: '262144', parse: int(1024, 64 * 1024 * 1024), doc: 'Bytes buffered for one slow socket before it is closed with 4001 (slow consumer).' }),
  s({ env: 'WS_MAX_PAYLOAD_BYTES', key: 'wsMaxPayloadBytes', fallback: 16_384, example: '16384', parse: int(128, 16 * 1024 * 1024), doc: 'Largest frame a client may send; larger closes the socket with 1009.' }),
  s({ env: 'WS_STATE_RATE_PER_S', key: 'wsStatePerSecond', fallback: 10, example: '10', parse: int(1, 100_000), doc: 'State frames per second per hints socket (sustained).' }),
  s({ env: 'WS_MAX_PER_USER', key: 'wsMaxPerUser', fallback: 32, example: '32', parse: int(1, 1_000_000), doc: 'Open WebSockets per user, hints and chat together; the upgrade past it is refused with 429 too_many_requests.' }),
  s({ env: 'REGISTER_PER_ADDRESS_PER_HOUR', key: 'registerPerAddressPerHour', fallback: 30, example: '30', parse: int(1, 1_000_000), doc: 'Registrations from one client address in a burst, refilled at this many per hour; more get 429 rate_limited with Retry-After (see TRUST_PROXY for the address).' }),
  s({ env: 'REGISTER_MAX_CONCURRENT', key: 'registerMaxConcurrent', fallback: 0, example: '2', parse: int(0, 100_000), doc: 'Registrations whose password is being hashed at once, waiting included; more get 503 overloaded at once. The thread pool is first in, first out, so this bounds how many hashes a login can find ahead of it (0.3 s each at the default cost). 0: twice WORKER_THREADS.' }),
  s({ env: 'PASSWORD_HASH_COST', key: 'passwordHashCost', fallback: 17, example: '17', parse: int(10, 18), doc: 'scrypt cost of new password hashes as log2(N), with r=8, p=1: 17 (N=2^17, 128 MiB and about 0.3 s of a thread per hash) is OWASP\'s floor. Lower only for tests. Older, cheaper hashes still verify and are re-hashed at this cost at the user\'s next successful login.' }),
  s({ env: 'HINT_MAX_BYTES', key: 'hintMaxBytes', fallback: 65_536, example: '65536', parse: int(16, 16 * 1024 * 1024), doc: 'Largest hint payload passed on to WebSockets; larger hints are dropped and counted (tether_hints_dropped_total).' }),
  s({ env: 'SSE_MAX_BACKPRESSURE', key: 'sseMaxBackpressure', fallback: 262_144, example: '262144', parse: int(1024, 64 * 1024 * 1024), doc: 'Bytes a server-sent-events answer may have waiting for a slow reader; past it the stream is ended and the chat cancelled, as a WebSocket past WS_MAX_BACKPRESSURE is closed.' }),
  s({ env: 'WS_STATE_BURST', key: 'wsStateBurst', fallback: 20, example: '20', parse: int(1, 100_000), doc: 'State frames a hints socket may send at once before the rate applies.' }),
  s({ env: 'WORKER_TASK_TIMEOUT_MS', key: 'workerTaskTimeoutMs', fallback: 5000, example: '5000', parse: int(10, 600_000), doc: 'Deadline of one worker-thread task; the thread is replaced when it passes.' }),
  s({ env: 'WORKER_INLINE', key: 'workerInline', fallback: false, example: '0', parse: bool, doc: 'Benchmarking only: run the worker tasks (password hashing, token counting, content filters) on the event loop instead of worker threads, with no deadline, to show what the pool prevents (npm run bench:loop). Refused with NODE_ENV=production.' }),
  s({ env: 'CONTENT_FILTERS', key: 'contentFilters', fallback: Object.freeze([]) as readonly ContentFilter[], example: '["forbidden\\\\s+word","/secret plan/i"]', parse: parseContentFilters, doc: 'Regular expressions (JSON array; "/source/flags" for flags) a chat message must not match; a match is 400 invalid_request, and nothing is stored or sent. Run on a worker thread. Empty: no screening.' }),
  s({ env: 'CONTENT_FILTER_TIMEOUT_MS', key: 'contentFilterTimeoutMs', fallback: 200, example: '200', parse: int(10, 60_000), doc: 'Deadline of screening one message against CONTENT_FILTERS (a pattern may backtrack for ever); past it the chat gets 503 overloaded.' })
] as const

/** Env names that look like ours but are not read: most likely typos. */
export function unknownVariables (env: Readonly<Record<string, string | undefined>>): string[] {
  const known = new Set<string>(SETTINGS.map((x) => x.env))
  const ours = /^(MQTT|CHAT|MAX|EMBEDDED|SHUTDOWN|CORS|DEMO|TETHER|DB|AUTH|LOGIN|HISTORY|WORKER|WS|CONTENT|HINT|SESSION|REGISTER|PASSWORD|SSE|TRUST)_/
  return Object.keys(env).filter((k) => ours.test(k) && !known.has(k) && !k.startsWith('MQTT_TEST'))
}

export function loadConfig (env: Readonly<Record<string, string | undefined>>): Config {
  const out: Record<string, unknown> = {}
  for (const setting of SETTINGS as readonly Setting<keyof Config>[]) {
    const raw = env[setting.env]
    if (raw === undefined || (raw === '' && setting.key !== 'corsOrigins')) {
      out[setting.key] = typeof setting.fallback === 'function' ? (setting.fallback as () => unknown)() : setting.fallback
      continue
    }
    const value = setting.parse(raw)
    if (isProblem(value)) throw new ConfigError(setting.env, value.problem, setting.example)
    out[setting.key] = value
  }
  // A demo responder on the embedded broker is the whole point of running without MQTT_URL.
  if (out.mqttUrl === undefined) out.demoWorker = true
  const config = out as unknown as Config
  if (env.WATCHDOG_EXIT === undefined || env.WATCHDOG_EXIT === '') out.watchdogExit = config.production
  if (config.production && config.testHooks) {
    throw new ConfigError('TETHER_TEST_HOOKS', 'must not be set when NODE_ENV=production (it enables a route that blocks the server)', '0')
  }
  if (config.production && config.workerInline) {
    throw new ConfigError('WORKER_INLINE', 'must not be set when NODE_ENV=production (it runs password hashing and token counting on the event loop, which then stalls)', '0')
  }
  if (config.production && config.authSecret === undefined) {
    throw new ConfigError('AUTH_SECRET', 'is required when NODE_ENV=production (a generated secret would change on every new machine and log everyone out)', '$(openssl rand -hex 32)')
  }
  if (config.mqttBackoffBaseMs > config.mqttBackoffCapMs) {
    throw new ConfigError('MQTT_BACKOFF_BASE_MS', `(${config.mqttBackoffBaseMs}) must not exceed MQTT_BACKOFF_CAP_MS (${config.mqttBackoffCapMs})`, '500')
  }
  return Object.freeze(config)
}
