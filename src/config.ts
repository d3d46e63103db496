/**
 * The gateway's one typed configuration object. Every environment variable the gateway reads
 * is declared in SETTINGS below, next to its default, an example and its doc (the README's
 * table is generated from them: `npm run docs:settings`); `loadConfig()` validates all of them
 * at start-up and returns a frozen object. Entry points pass `process.env`; tests pass plain
 * objects. How settings are read is src/settings/kernel.ts, shared with the LLM worker.
 */
import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { isAddressOrNetwork, LOOPBACK_PROXIES } from './http/client-address.js'
import { ConfigError, defineConfig, nameInEnv, settingOf, type Env } from './settings/kernel.js'
import { checkMqttLinkSettings, mqttLinkSettings, type MqttLinkSettings } from './settings/mqtt-link-settings.js'
import type { PresenceMode } from './chat/worker-routing.js'
import { bool, identifier, int, logLevel, mebibytes, mqttUrl, oneOf, problem, type LogLevel, type Problem } from './settings/parsers.js'

export { ConfigError, EXIT_CONFIG } from './settings/kernel.js'
export type { LogLevel } from './settings/parsers.js'

export interface Config extends MqttLinkSettings {
  readonly port: number
  readonly host: string
  /** External broker; undefined means "run the embedded broker and the demo responder". */
  readonly mqttUrl: string | undefined
  readonly embeddedMqttPort: number
  readonly instanceId: string
  /** Whether INSTANCE_ID was set (not generated): only then can another live gateway hold it. */
  readonly instanceIdSet: boolean
  /** Interval of this gateway's heartbeats on llm/gateways/<instance_id>. */
  readonly clusterHeartbeatMs: number
  readonly clusterHandoverWaitMs: number
  readonly streamTakeoverTimeoutMs: number
  readonly chatTimeoutMs: number
  /** Silence after a stream has begun that ends it with llm_stalled; 0: none. */
  readonly chatIdleTimeoutMs: number
  /** Wait for the first chunk (or done) that ends the chat with llm_stalled; 0: none. */
  readonly chatFirstChunkTimeoutMs: number
  /** How long a stream outlives its client's connection, waiting for a resume. */
  readonly streamResumeGraceMs: number
  /** How long a settled stream stays resumable. */
  readonly streamRetainMs: number
  /** Bytes of chunk text all replay buffers may hold together. */
  readonly streamBufferMaxBytes: number
  /** How announced LLM workers are used (src/chat/worker-routing.ts). */
  readonly workerPresence: PresenceMode
  /** How long an announced worker has to acknowledge a request before it moves. */
  readonly chatAcceptTimeoutMs: number
  /** Announced workers remembered at once. */
  readonly workerRegistryMax: number
  /** How long an offline worker is remembered. */
  readonly workerForgetMs: number
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
  /** Registrations hashing at once, queue included; 0: twice threads. */
  readonly registerMaxConcurrent: number
  /** scrypt cost as log2(N) for new password hashes. */
  readonly passwordHashCost: number
  /** Largest hint payload passed on to sockets; larger hints are dropped and counted. */
  readonly hintMaxBytes: number
  /** Bytes an event-stream response may have buffered for a slow reader before it is ended. */
  readonly sseMaxBackpressure: number
  readonly maxBodyBytes: number
  readonly mqttStaleAfterMs: number
  readonly shutdownGraceMs: number
  readonly logLevel: LogLevel
  readonly corsOrigins: readonly string[]
  readonly demoResponder: boolean
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
  readonly dbWriteBatchMax: number
  readonly dbWriteQueueMax: number
  readonly historyCacheMaxBytes: number
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
  /** Threads of the pool that takes blocking work off the event loop. */
  readonly threads: number
  readonly threadNice: number
  readonly threadMaxQueue: number
  readonly threadTaskTimeoutMs: number
  /** Benchmarking only: thread tasks run on the event loop (no threads); refused in production. */
  readonly threadInline: boolean
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

/**
 * TRUST_PROXY: off (0/false/empty), 1/true for a proxy on this host (loopback), or a comma list
 * of the proxies' addresses and networks ("10.0.0.5, 10.1.0.0/16").
 */
export function parseTrustProxy (raw: string): readonly string[] | Problem {
  const v = raw.trim().toLowerCase()
  if (['0', 'false', 'no', 'off', ''].includes(v)) return Object.freeze([])
  if (['1', 'true', 'yes', 'on'].includes(v)) return LOOPBACK_PROXIES
  const entries = raw.split(',').map((e) => e.trim()).filter((e) => e !== '')
  const bad = entries.find((e) => !isAddressOrNetwork(e))
  if (bad !== undefined) return problem(`must be 0, 1 (a proxy on this host) or a comma list of proxy addresses or networks (a.b.c.d[/n], IPv6[/n]); "${bad}" is none of these`)
  return Object.freeze(entries)
}

/** A JSON array of origins or a comma list; "*" allows any origin. */
export function parseOrigins (raw: string): readonly string[] | Problem {
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
export function parseContentFilters (raw: string): readonly ContentFilter[] | Problem {
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

function databaseUrl (raw: string): string | Problem {
  let u: URL
  try { u = new URL(raw) } catch { return problem('is not a URL') }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') return problem(`must use postgres:// (got ${u.protocol}//)`)
  if (u.hostname === '' && !u.searchParams.has('host')) return problem('has no host')
  return raw
}

function dir (raw: string): string | Problem {
  return raw.trim() === '' || raw.includes('\u0000') ? problem('must be a directory path') : raw
}

function secret (raw: string): string | Problem {
  // 32 characters of a random secret is 192+ bits for HMAC-SHA256; shorter is guessable.
  return raw.length >= 32 ? raw : problem(`must be at least 32 characters (got ${raw.length})`)
}

function chatMode (raw: string): 'persistent' | 'relay' | Problem {
  return raw === 'persistent' || raw === 'relay' ? raw : problem(`must be "persistent" or "relay", got "${raw}"`)
}

function nodeEnv (raw: string): boolean | Problem {
  return raw === 'production'
}

function host (raw: string): string | Problem {
  return /^[A-Za-z0-9.:[\]-]+$/.test(raw) ? raw : problem(`is not a host name or address: "${raw}"`)
}


const s = settingOf<Config>()

/** Every variable, in the order the README's table lists them. */
export const SETTINGS = [
  s({ env: 'PORT', key: 'port', fallback: 8000, example: '8000', parse: int(0, 65535), doc: 'HTTP port (0 picks a free one).' }),
  s({ env: 'HOST', key: 'host', fallback: '0.0.0.0', example: '127.0.0.1', parse: host, doc: 'Address to listen on.' }),
  s({ env: 'MQTT_URL', key: 'mqttUrl', fallback: undefined, example: 'mqtt://127.0.0.1:1883', parse: mqttUrl, doc: 'External broker, `mqtt://[user:pass@]host:port`. Unset: embedded broker on loopback plus the demo responder.' }),
  s({ env: 'EMBEDDED_MQTT_PORT', key: 'embeddedMqttPort', fallback: 1883, example: '1883', parse: int(0, 65535), doc: 'Port of the embedded broker; if taken, a free port is used and printed.' }),
  ...mqttLinkSettings<Config>(),
  s({ env: 'MQTT_STALE_AFTER_MS', key: 'mqttStaleAfterMs', fallback: 5000, example: '5000', parse: int(50, 600_000), doc: 'With requests in flight, silence this long makes the link suspect: it is probed.' }),
  s({ env: 'INSTANCE_ID', key: 'instanceId', fallback: () => `tether-${randomBytes(6).toString('hex')}`, example: 'tether-a1', parse: identifier, defaultDoc: 'random `tether-<12 hex>`', doc: 'Names this gateway\'s reply topic (`llm/chat/reply/<id>`) and MQTT client id. Two running gateways must not share one.' }),
  s({ env: 'CLUSTER_HEARTBEAT_MS', key: 'clusterHeartbeatMs', fallback: 2000, example: '2000', parse: int(100, 60_000), doc: 'Interval of this gateway\'s retained heartbeat on `llm/gateways/<INSTANCE_ID>` (with a retained last will): the gateways of a cluster list each other on `/api/health/cluster`, and a gateway started with an `INSTANCE_ID` whose heartbeats are fresh exits 78 instead of knocking the live one off the broker.' }),
  s({ env: 'CHAT_TIMEOUT_MS', key: 'chatTimeoutMs', fallback: 90_000, example: '90000', parse: int(100, 3_600_000), doc: 'Deadline of a chat request; `504 llm_timeout` when it passes.' }),
  s({ env: 'CHAT_IDLE_TIMEOUT_MS', key: 'chatIdleTimeoutMs', fallback: 30_000, example: '30000', parse: int(0, 3_600_000), doc: 'Once an answer has begun, silence this long ends it with `504 llm_stalled` (an `error` after the chunks), keeps the text that arrived (status `stalled`) and tells the LLM worker to stop. `0`: no bound but `CHAT_TIMEOUT_MS`.' }),
  s({ env: 'CHAT_FIRST_CHUNK_TIMEOUT_MS', key: 'chatFirstChunkTimeoutMs', fallback: 0, example: '20000', parse: int(0, 3_600_000), defaultDoc: '`0` (off)', doc: 'Bound on the wait for the first chunk (or `done`): past it, `504 llm_stalled`. Off by default: a model may think long before it speaks.' }),
  s({ env: 'STREAM_RESUME_GRACE_MS', key: 'streamResumeGraceMs', fallback: 30_000, example: '30000', parse: int(0, 3_600_000), doc: 'How long a streamed chat (WebSocket or server-sent events) outlives its client\'s connection, so that the client can reconnect and resume it; only then is it cancelled (the LLM worker is told, reason `client_gone`). The plain JSON path still cancels when its client goes.' }),
  s({ env: 'CLUSTER_HANDOVER_WAIT_MS', key: 'clusterHandoverWaitMs', fallback: 300, example: '300', parse: int(50, 10_000), doc: 'A resume for a stream this gateway does not hold asks the other gateways first; after this long without an answer (the gateway that held it is gone) it asks the workers to re-send it.' }),
  s({ env: 'STREAM_TAKEOVER_TIMEOUT_MS', key: 'streamTakeoverTimeoutMs', fallback: 2000, example: '2000', parse: int(0, 60_000), doc: 'How long a resume for a stream held by another gateway (or by one that died) may look for it before it ends `stream_interrupted`. Only asked once another gateway has been seen on the broker; 0: a stream resumes only on the gateway that started it.' }),
  s({ env: 'STREAM_RETAIN_MS', key: 'streamRetainMs', fallback: 60_000, example: '60000', parse: int(0, 3_600_000), doc: 'How long a finished stream stays resumable (its chunks and its end replayed).' }),
  s({ env: 'STREAM_BUFFER_MAX_BYTES', key: 'streamBufferMaxBytes', fallback: 67_108_864, example: '67108864', parse: int(0, 4 * 1024 * 1024 * 1024), doc: 'Bytes of chunk text all replay buffers together may hold (64 MiB by default, `tether_stream_buffer_bytes` shows the use). Past it the oldest finished streams are dropped first, then the stream that grew it; a dropped stream can no longer be resumed (`stream_not_found`), never replayed with a gap.' }),
  s({ env: 'WORKER_PRESENCE', key: 'workerPresence', fallback: 'auto', example: 'auto', parse: oneOf<PresenceMode>(['auto', 'required', 'off']), doc: 'How announced LLM workers (heartbeats on `llm/workers/<id>`) are used. `auto`: once any worker has announced itself, chats go to the least loaded online worker on `llm/chat/request/<worker_id>` and none online is `503 no_workers` at once; until then (v1 workers), the shared `llm/chat/request`. `required`: always so, even before the first heartbeat. `off`: presence ignored, always the shared topic.' }),
  s({ env: 'CHAT_ACCEPT_TIMEOUT_MS', key: 'chatAcceptTimeoutMs', fallback: 2000, example: '2000', parse: int(50, 600_000), doc: 'How long an announced LLM worker has to acknowledge a request (`ack`, or any reply). Past it the request moves to another worker once; with nowhere to go it ends with `503 worker_lost`.' }),
  s({ env: 'WORKER_REGISTRY_MAX', key: 'workerRegistryMax', fallback: 1000, example: '1000', parse: int(1, 100_000), doc: 'Announced LLM workers remembered at once. Past it the longest-offline one is forgotten; with none offline, heartbeats of new workers are dropped (counted as `registry_full`).' }),
  s({ env: 'WORKER_FORGET_MS', key: 'workerForgetMs', fallback: 600_000, example: '600000', parse: int(1000, 86_400_000), doc: 'How long an offline LLM worker stays listed (`/api/health/workers`) before it is forgotten. With `WORKER_PRESENCE=auto`, when every worker is forgotten chats go to the shared topic again.' }),
  s({ env: 'MAX_PENDING', key: 'maxPending', fallback: 10_000, example: '10000', parse: int(1, 1_000_000), doc: 'Chats in flight at once; more get 429.' }),
  s({ env: 'MAX_PENDING_PER_SESSION', key: 'maxPendingPerSession', fallback: 4, example: '4', parse: int(1, 10_000), doc: 'Chats in flight per session; more get 429.' }),
  s({ env: 'MAX_PENDING_PER_USER', key: 'maxPendingPerUser', fallback: 16, example: '16', parse: int(1, 1_000_000), doc: 'Chats in flight per user over all their sessions and sockets; more get `429 too_many_requests`. Fair share: no account can take the slots of `MAX_PENDING`.' }),
  s({ env: 'SESSION_CREATE_PER_MINUTE', key: 'sessionCreatePerMinute', fallback: 30, example: '30', parse: int(1, 1_000_000), doc: 'Sessions one user may create in a burst, refilled at this many per minute; more get `429 too_many_requests` with `Retry-After`.' }),
  s({ env: 'MAX_BODY_BYTES', key: 'maxBodyBytes', fallback: 65_536, example: '65536', parse: int(64, 16 * 1024 * 1024), doc: 'Largest request body; larger is 413.' }),
  s({ env: 'SHUTDOWN_GRACE_MS', key: 'shutdownGraceMs', fallback: 10_000, example: '10000', parse: int(0, 600_000), doc: 'On SIGTERM, how long in-flight chats may finish before they get 503.' }),
  s({ env: 'LOG_LEVEL', key: 'logLevel', fallback: 'info', example: 'info', parse: logLevel, doc: '`fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`. Logs are JSON lines on stdout.' }),
  s({ env: 'CORS_ORIGINS', key: 'corsOrigins', fallback: Object.freeze([]) as readonly string[], example: '["https://app.example.com"]', parse: parseOrigins, doc: 'Browser origins allowed by CORS: a JSON array (`["https://app.example.com"]`) or a comma list; `*` for any. Empty: no CORS headers.' }),
  s({ env: 'DEMO_RESPONDER', key: 'demoResponder', formerly: ['DEMO_WORKER'], fallback: false, example: '1', parse: bool, doc: 'Run the demo responder against an external broker too (always on with the embedded one). It uses `MQTT_KEEPALIVE_S` and `MQTT_CONNECT_TIMEOUT_MS` like the gateway, and reconnects after 1 s.' }),
  s({ env: 'NODE_ENV', key: 'production', fallback: false, example: 'production', parse: nodeEnv, defaultDoc: '(unset)', doc: '`production` makes `AUTH_SECRET` required.' }),
  s({ env: 'DATABASE_URL', key: 'databaseUrl', fallback: undefined, example: 'postgres://tether:secret@127.0.0.1:5432/tether', parse: databaseUrl, doc: 'PostgreSQL, `postgres://user:pass@host:5432/db`. Unset: an embedded PostgreSQL server under `DATA_DIR`.' }),
  s({ env: 'DATA_DIR', key: 'dataDir', fallback: './data', example: './data', parse: dir, doc: 'Where the embedded PostgreSQL and the generated auth secret live.' }),
  s({ env: 'EMBEDDED_PG_PORT', key: 'embeddedPgPort', fallback: 54329, example: '54329', parse: int(0, 65535), doc: 'Port of the embedded PostgreSQL (loopback); if taken, a free port is used and printed.' }),
  s({ env: 'DB_POOL_SIZE', key: 'dbPoolSize', fallback: 10, example: '10', parse: int(1, 1000), doc: 'Connections in the PostgreSQL pool.' }),
  s({ env: 'DB_ACQUIRE_TIMEOUT_MS', key: 'dbAcquireTimeoutMs', fallback: 2000, example: '2000', parse: int(50, 600_000), doc: 'Longest wait for a pool connection; then `503 db_unavailable`.' }),
  s({ env: 'DB_STATEMENT_TIMEOUT_MS', key: 'dbStatementTimeoutMs', fallback: 5000, example: '5000', parse: int(50, 3_600_000), doc: '`statement_timeout` on every connection, and a client-side bound 1 s above it for a server that stops answering.' }),
  s({ env: 'DB_IDLE_IN_TX_TIMEOUT_MS', key: 'dbIdleInTxTimeoutMs', fallback: 10_000, example: '10000', parse: int(100, 3_600_000), doc: '`idle_in_transaction_session_timeout` on every connection.' }),
  s({ env: 'DB_WRITE_BATCH_MAX', key: 'dbWriteBatchMax', fallback: 256, example: '256', parse: int(1, 10_000), doc: 'Most chat writes (user turns, answers, partial answers) group-committed in one statement; the next batch gathers while one commits.' }),
  s({ env: 'DB_WRITE_QUEUE_MAX', key: 'dbWriteQueueMax', fallback: 10_000, example: '10000', parse: int(1, 1_000_000), doc: 'Chat writes waiting for a batch before a new chat is refused at once with `503 overloaded`; answers to chats already accepted are always queued.' }),
  s({ env: 'DB_HEALTH_INTERVAL_MS', key: 'dbHealthIntervalMs', fallback: 2000, example: '2000', parse: int(100, 600_000), doc: 'How often the database is probed, so recovery is seen even with no traffic.' }),
  s({ env: 'AUTH_SECRET', key: 'authSecret', fallback: undefined, example: '$(openssl rand -hex 32)', parse: secret, defaultDoc: '(generated)', doc: 'HMAC-SHA256 key for tokens, at least 32 characters. Required with `NODE_ENV=production`; otherwise generated once and kept in `DATA_DIR/auth-secret`.' }),
  s({ env: 'AUTH_TOKEN_TTL_S', key: 'authTokenTtlS', fallback: 86_400, example: '86400', parse: int(60, 31_536_000), doc: 'Lifetime of a login token.' }),
  s({ env: 'LOGIN_MAX_FAILURES', key: 'loginMaxFailures', fallback: 10, example: '10', parse: int(1, 100_000), doc: 'Failed logins per username or client address (token bucket refilling over 60 s) before `429 rate_limited`. The count is kept in PostgreSQL, so it holds across all gateways on one database (each gateway\'s own count stands in while the database is down).' }),
  s({ env: 'REGISTER_PER_ADDRESS_PER_HOUR', key: 'registerPerAddressPerHour', fallback: 30, example: '30', parse: int(1, 1_000_000), doc: 'Registrations from one client address in a burst, refilled at this many per hour; more get `429 rate_limited` with `Retry-After`.' }),
  s({ env: 'REGISTER_MAX_CONCURRENT', key: 'registerMaxConcurrent', fallback: 0, example: '2', parse: int(0, 100_000), defaultDoc: '`0` (twice `THREADS`)', doc: 'Registrations whose password is being hashed at once, waiting included; more get `503 overloaded` at once, so a login never finds more than this many hashes ahead of it in the thread pool.' }),
  s({ env: 'PASSWORD_HASH_COST', key: 'passwordHashCost', fallback: 17, example: '17', parse: int(10, 18), doc: 'scrypt cost of new password hashes as log2(N), r=8, p=1. 17 is OWASP\'s floor (128 MiB, ~0.3 s of a thread per hash); lower only for tests. Older, cheaper hashes still verify and are re-hashed at this cost at the next successful login.' }),
  s({ env: 'HISTORY_MAX_MESSAGES', key: 'historyMaxMessages', fallback: 20, example: '20', parse: int(0, 1000), doc: 'Earlier turns sent to the LLM worker as history, at most.' }),
  s({ env: 'HISTORY_MAX_CHARS', key: 'historyMaxChars', fallback: 16_000, example: '16000', parse: int(0, 10_000_000), doc: 'Size budget of the history: trimmed from the oldest turn.' }),
  s({ env: 'HISTORY_MAX_TOKENS', key: 'historyMaxTokens', fallback: 3000, example: '3000', parse: int(0, 10_000_000), doc: 'Token budget of the history (`o200k_base` encoding, content only), applied after `HISTORY_MAX_CHARS` on a pool thread; trimmed from the oldest turn. If the pool is full or late, the history is cut to this many UTF-8 bytes instead (never more tokens than that). `0`: no token trimming.' }),
  s({ env: 'HISTORY_CACHE_MAX_BYTES', key: 'historyCacheMaxBytes', fallback: 33_554_432, example: '33554432', parse: int(0, 4 * 1024 * 1024 * 1024), doc: 'Memory for the newest `HISTORY_MAX_MESSAGES` turns of the sessions this gateway writes to (32 MiB by default; least recently used out first). A chat on a cached session skips the history read, and the cache is checked against a version every write to the session bumps (any gateway, any release), so it never serves a stale history. `0`: every chat reads its history.' }),
  s({ env: 'CHAT_MODE', key: 'chatMode', fallback: 'persistent', example: 'persistent', parse: chatMode, doc: '`persistent`: chats need a token and an owned session and are stored. `relay`: no token, any well-formed session id, nothing stored — for trusted networks that keep history elsewhere, and for measuring what persistence costs. Logged as a warning.' }),
  s({ env: 'TRUST_PROXY', key: 'trustProxy', fallback: Object.freeze([]) as readonly string[], example: '127.0.0.1,10.0.0.0/8', parse: parseTrustProxy, defaultDoc: 'off', doc: 'The reverse proxies whose `X-Real-IP` names the client, for the per-address login and registration limits: a comma list of addresses and networks (`10.0.0.5,10.1.0.0/16`), or `1` for a proxy on this host (the shipped `deploy/nginx/`). The header is believed only from those peers and only when it holds one valid address; without it every client behind the proxy shares one address.' }),
  s({ env: 'WATCHDOG_STALL_MS', key: 'watchdogStallMs', fallback: 5000, example: '5000', parse: int(100, 600_000), doc: 'An event loop blocked this long is reported by the watchdog thread: one JSON line with the stall, the last route served, pending counts and memory.' }),
  s({ env: 'WATCHDOG_EXIT', key: 'watchdogExit', fallback: false, example: '1', parse: bool, defaultDoc: 'on in production', doc: 'Also end the process on a stall (signal SIGUSR2, exit status 140) so the supervisor restarts it.' }),
  s({ env: 'EVENT_LOOP_LAG_DEGRADED_MS', key: 'lagDegradedMs', fallback: 200, example: '200', parse: int(1, 600_000), doc: 'Event-loop delay p99 (30 s window) above this makes health `degraded`.' }),
  s({ env: 'MEMORY_SOFT_LIMIT_MB', key: 'memorySoftLimitBytes', fallback: 0, example: '1024', parse: mebibytes(0, 1_048_576), defaultDoc: '`0` (off)', doc: 'Resident memory above this makes health `degraded`.' }),
  s({ env: 'TETHER_TEST_HOOKS', key: 'testHooks', fallback: false, example: '1', parse: bool, doc: 'Test-only: enables `POST /__test/block-event-loop`. Refused with `NODE_ENV=production`.' }),
  s({ env: 'WS_IDLE_TIMEOUT_S', key: 'wsIdleTimeoutS', fallback: 32, example: '32', parse: int(8, 960), doc: 'WebSocket idle timeout: a peer that sends nothing, not even a pong, for this long is closed, within 2× this. The gateway pings each socket, at a phase of its own, often enough (every 6 s with the default) that uWebSockets.js\'s own burst of pings goes only to peers that stopped answering. 8–960.' }),
  s({ env: 'WS_MAX_BACKPRESSURE', key: 'wsMaxBackpressure', fallback: 262_144, example: '262144', parse: int(1024, 64 * 1024 * 1024), doc: 'Bytes buffered for one slow socket before it is closed with 4001.' }),
  s({ env: 'WS_MAX_PAYLOAD_BYTES', key: 'wsMaxPayloadBytes', fallback: 16_384, example: '16384', parse: int(128, 16 * 1024 * 1024), doc: 'Largest frame a client may send; larger closes the socket with 1009.' }),
  s({ env: 'WS_STATE_RATE_PER_S', key: 'wsStatePerSecond', fallback: 10, example: '10', parse: int(1, 100_000), doc: 'State frames per second per hints socket (sustained).' }),
  s({ env: 'WS_STATE_BURST', key: 'wsStateBurst', fallback: 20, example: '20', parse: int(1, 100_000), doc: 'State frames a hints socket may send at once.' }),
  s({ env: 'WS_MAX_PER_USER', key: 'wsMaxPerUser', fallback: 32, example: '32', parse: int(1, 1_000_000), doc: 'Open WebSockets per user, both endpoints together; past it the upgrade is refused with 429.' }),
  s({ env: 'HINT_MAX_BYTES', key: 'hintMaxBytes', fallback: 65_536, example: '65536', parse: int(16, 16 * 1024 * 1024), doc: 'Largest hint payload passed on to sockets; larger hints are dropped and counted.' }),
  s({ env: 'SSE_MAX_BACKPRESSURE', key: 'sseMaxBackpressure', fallback: 262_144, example: '262144', parse: int(1024, 64 * 1024 * 1024), doc: 'Bytes an event-stream answer may have waiting for a slow reader; past it the stream is ended, and its chat waits `STREAM_RESUME_GRACE_MS` for a resume as after a disconnect.' }),
  s({ env: 'THREADS', key: 'threads', formerly: ['WORKER_THREADS'], fallback: () => Math.max(1, Math.min(4, availableParallelism() - 1)), example: '2', parse: int(1, 256), defaultDoc: 'cores − 1, 1 to 4', doc: 'Threads for blocking work (password hashing, history token counting, content filters).' }),
  s({ env: 'THREAD_NICE', key: 'threadNice', formerly: ['WORKER_NICE'], fallback: 10, example: '10', parse: int(0, 19), doc: 'How much lower the pool threads\' CPU priority is than the event loop\'s (`nice(2)` units; Linux keeps a priority per thread; 0–19, 0 = the same). On a machine whose cores are busy, password hashing then waits for the loop instead of health checks and chats waiting for it (measured with `npm run bench:loop`). Needs the `@napi-rs/nice` addon, a dependency.' }),
  s({ env: 'THREAD_MAX_QUEUE', key: 'threadMaxQueue', formerly: ['WORKER_MAX_QUEUE'], fallback: 32, example: '32', parse: int(1, 1_000_000), doc: 'Tasks waiting for a thread; more get `503 overloaded` at once. Keep it near what the threads finish within `THREAD_TASK_TIMEOUT_MS`: a longer queue only makes tasks wait until their deadline kills them (measured with `npm run bench:loop`).' }),
  s({ env: 'THREAD_TASK_TIMEOUT_MS', key: 'threadTaskTimeoutMs', formerly: ['WORKER_TASK_TIMEOUT_MS'], fallback: 5000, example: '5000', parse: int(10, 600_000), doc: 'Deadline of one thread task; the thread is replaced when it passes.' }),
  s({ env: 'THREAD_INLINE', key: 'threadInline', formerly: ['WORKER_INLINE'], fallback: false, example: '0', parse: bool, doc: 'Benchmarking only: runs the thread tasks (password hashing, history token counting, content filters) on the event loop instead of threads, with no deadline, to show what the pool prevents (`npm run bench:loop`). Refused with `NODE_ENV=production`.' }),
  s({ env: 'CONTENT_FILTERS', key: 'contentFilters', fallback: Object.freeze([]) as readonly ContentFilter[], example: '["forbidden\\\\s+word","/secret plan/i"]', parse: parseContentFilters, doc: 'Regular expressions a chat message must not match, as a JSON array: `["forbidden\\\\s+word", "/secret plan/i"]` (a string `/source/flags` carries flags `i`, `m`, `s`, `u`, `v`). Checked at start-up (a bad pattern exits with status 78 naming it). A match answers `400 invalid_request` and the message is neither stored nor sent. Matching runs on a pool thread. Empty: no screening.' }),
  s({ env: 'CONTENT_FILTER_TIMEOUT_MS', key: 'contentFilterTimeoutMs', fallback: 200, example: '200', parse: int(10, 60_000), doc: 'Deadline of screening one message; a pattern that backtracks past it has its thread replaced and the chat gets `503 overloaded`.' })
]

/** Names that look like ours; one that is not read is most likely a typo. */
const OURS = /^(MQTT|CHAT|CLUSTER|MAX|EMBEDDED|SHUTDOWN|CORS|DEMO|TETHER|DB|AUTH|LOGIN|HISTORY|WORKER|THREAD|WS|CONTENT|HINT|SESSION|REGISTER|PASSWORD|SSE|TRUST|STREAM)_/

function checkGateway (config: Config, env: Env): Config {
  const out = config as { -readonly [K in keyof Config]: Config[K] }
  // A demo responder on the embedded broker is the whole point of running without MQTT_URL.
  if (config.mqttUrl === undefined) out.demoResponder = true
  out.instanceIdSet = env.INSTANCE_ID !== undefined && env.INSTANCE_ID !== ''
  if (env.WATCHDOG_EXIT === undefined || env.WATCHDOG_EXIT === '') out.watchdogExit = config.production
  if (config.production && config.testHooks) {
    throw new ConfigError('TETHER_TEST_HOOKS', 'must not be set when NODE_ENV=production (it enables a route that blocks the server)', '0')
  }
  if (config.production && config.threadInline) {
    throw new ConfigError(nameInEnv(env, 'THREAD_INLINE', ['WORKER_INLINE']), 'must not be set when NODE_ENV=production (it runs password hashing and token counting on the event loop, which then stalls)', '0', 'THREAD_INLINE')
  }
  if (config.production && config.authSecret === undefined) {
    throw new ConfigError('AUTH_SECRET', 'is required when NODE_ENV=production (a generated secret would change on every new machine and log everyone out)', '$(openssl rand -hex 32)')
  }
  checkMqttLinkSettings(config)
  return out
}

export const GATEWAY_CONFIG = defineConfig<Config>({
  settings: SETTINGS,
  ours: OURS,
  // The tests' broker URLs (MQTT_TEST_URL, ...) share the environment with ours.
  ignore: (name) => name.startsWith('MQTT_TEST'),
  check: checkGateway
})

export const loadConfig = (env: Env): Config => GATEWAY_CONFIG.load(env)
export const unknownVariables = (env: Env): string[] => GATEWAY_CONFIG.unknownVariables(env)
