/**
 * The reference worker's one typed configuration object, built like the gateway's
 * (src/config.ts): every variable in SETTINGS with its default, unit and example, validated at
 * start-up into a frozen object. `main.ts` is the only caller that passes `process.env`.
 */
import { randomBytes } from 'node:crypto'
import { ConfigError, type LogLevel } from '../config.js'
import { ID_RULE, isValidId } from '../ids.js'

export { ConfigError, EXIT_CONFIG } from '../config.js'

export interface WorkerConfig {
  readonly mqttUrl: string
  readonly mqttTopicPrefix: string
  readonly llmBaseUrl: string
  /** undefined: no Authorization header (local servers such as Ollama need none). */
  readonly llmApiKey: string | undefined
  readonly llmModel: string
  readonly llmSystemPrompt: string | undefined
  readonly llmConnectTimeoutMs: number
  readonly workerConcurrency: number
  readonly workerQueue: number
  /** undefined: a plain subscription (every worker hears every request). */
  readonly workerSharedGroup: string | undefined
  readonly workerId: string
  readonly workerShutdownGraceMs: number
  readonly mqttKeepaliveS: number
  readonly mqttConnectTimeoutMs: number
  readonly mqttBackoffBaseMs: number
  readonly mqttBackoffCapMs: number
  readonly logLevel: LogLevel
}

type Parse<T> = (raw: string) => T | { problem: string }

interface Setting<K extends keyof WorkerConfig> {
  readonly env: string
  readonly key: K
  /** `required` makes an unset (or empty) variable a configuration error. */
  readonly fallback: WorkerConfig[K] | (() => WorkerConfig[K]) | 'required'
  readonly example: string
  readonly parse: Parse<WorkerConfig[K]>
  /** An empty value means "off" rather than "use the default". */
  readonly emptyMeansOff?: true
  readonly doc: string
}

function problem (p: string): { problem: string } { return { problem: p } }
function isProblem (v: unknown): v is { problem: string } {
  return typeof v === 'object' && v !== null && 'problem' in v
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
  if (raw.length > 128) return problem('must be 1 to 128 characters')
  if (/[+#\u0000]/.test(raw)) return problem(`must not contain MQTT wildcards (+, #) or NUL, got "${raw}"`)
  if (raw.startsWith('/') || raw.endsWith('/') || raw.includes('//') || raw.startsWith('$')) {
    return problem(`must not start with $ or / nor have empty levels, got "${raw}"`)
  }
  return raw
}

function mqttUrl (raw: string): string | { problem: string } {
  let u: URL
  try { u = new URL(raw) } catch { return problem('is not a URL') }
  if (u.protocol !== 'mqtt:' && u.protocol !== 'tcp:') return problem(`must use mqtt:// (got ${u.protocol}//)`)
  if (u.hostname === '') return problem('has no host')
  return raw
}

function httpUrl (raw: string): string | { problem: string } {
  let u: URL
  // Never echo the value: a base URL may carry credentials.
  try { u = new URL(raw) } catch { return problem('is not a URL') }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return problem(`must use http:// or https:// (got ${u.protocol}//)`)
  if (u.username !== '' || u.password !== '') return problem('must not carry credentials (use LLM_API_KEY)')
  if (u.search !== '' || u.hash !== '') return problem('must not have a query or fragment')
  // The worker appends /v1/chat/completions; a trailing /v1 or / is the commonest slip.
  const path = u.pathname.replace(/\/+$/, '').replace(/\/v1$/, '')
  return `${u.origin}${path}`
}

function text (raw: string): string | { problem: string } {
  return raw.includes('\u0000') ? problem('must not contain NUL') : raw
}

function model (raw: string): string | { problem: string } {
  return raw.trim() === '' || raw.length > 256 ? problem('must be 1 to 256 characters') : raw
}

function apiKey (raw: string): string | { problem: string } {
  // A header value with a newline would be refused by fetch later, far from the cause.
  return /^[\x21-\x7e]+$/.test(raw) ? raw : problem('must be printable ASCII without spaces')
}

const LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
function logLevel (raw: string): LogLevel | { problem: string } {
  const v = raw.trim().toLowerCase() as LogLevel
  return LEVELS.includes(v) ? v : problem(`must be one of ${LEVELS.join(', ')}, got "${raw}"`)
}

function s<K extends keyof WorkerConfig> (setting: Setting<K>): Setting<K> { return setting }

/** Every variable, in the order docs/worker.md documents them. */
export const WORKER_SETTINGS = [
  s({ env: 'MQTT_URL', key: 'mqttUrl', fallback: 'required', example: 'mqtt://127.0.0.1:1883', parse: mqttUrl, doc: 'The broker the gateway uses.' }),
  s({ env: 'MQTT_TOPIC_PREFIX', key: 'mqttTopicPrefix', fallback: 'llm', example: 'llm', parse: topicPrefix, doc: 'First level(s) of every topic; the same as the gateway\'s.' }),
  s({ env: 'LLM_BASE_URL', key: 'llmBaseUrl', fallback: 'required', example: 'http://127.0.0.1:11434', parse: httpUrl, doc: 'The OpenAI-compatible server; the worker calls <base>/v1/chat/completions (a trailing /v1 is accepted).' }),
  s({ env: 'LLM_API_KEY', key: 'llmApiKey', fallback: undefined, example: 'sk-...', parse: apiKey, doc: 'Sent as "Authorization: Bearer <key>". Unset: no Authorization header.' }),
  s({ env: 'LLM_MODEL', key: 'llmModel', fallback: 'required', example: 'llama3.2', parse: model, doc: 'The "model" of every completion request.' }),
  s({ env: 'LLM_SYSTEM_PROMPT', key: 'llmSystemPrompt', fallback: undefined, example: 'You are a concise assistant.', parse: text, doc: 'Sent first, as a system message. Unset: none.' }),
  s({ env: 'LLM_CONNECT_TIMEOUT_MS', key: 'llmConnectTimeoutMs', fallback: 10_000, example: '10000', parse: int(50, 600_000), doc: 'From sending a request to the model server\'s response headers; then an error reply.' }),
  s({ env: 'WORKER_CONCURRENCY', key: 'workerConcurrency', fallback: 8, example: '8', parse: int(1, 10_000), doc: 'Upstream calls in flight at once.' }),
  s({ env: 'WORKER_QUEUE', key: 'workerQueue', fallback: 64, example: '64', parse: int(0, 1_000_000), doc: 'Requests waiting for a free slot; beyond it, an error reply "worker overloaded" at once.' }),
  s({ env: 'WORKER_SHARED_GROUP', key: 'workerSharedGroup', fallback: 'tether-workers', example: 'tether-workers', parse: identifier, emptyMeansOff: true, doc: 'Subscribe as $share/<group>/<prefix>/chat/request. Empty: a plain subscription (the embedded aedes broker does not deliver shared subscriptions).' }),
  s({ env: 'WORKER_ID', key: 'workerId', fallback: () => `worker-${randomBytes(6).toString('hex')}`, example: 'worker-a1', parse: identifier, doc: 'MQTT client id and log label. Default: random per start.' }),
  s({ env: 'WORKER_SHUTDOWN_GRACE_MS', key: 'workerShutdownGraceMs', fallback: 10_000, example: '10000', parse: int(0, 600_000), doc: 'On SIGTERM, how long in-flight requests may finish before they are aborted with "worker shutting down".' }),
  s({ env: 'MQTT_KEEPALIVE_S', key: 'mqttKeepaliveS', fallback: 15, example: '15', parse: int(1, 3600), doc: 'MQTT keepalive, and the idle period after which the link is probed.' }),
  s({ env: 'MQTT_CONNECT_TIMEOUT_MS', key: 'mqttConnectTimeoutMs', fallback: 5000, example: '5000', parse: int(50, 600_000), doc: 'How long one connection attempt (TCP + CONNACK) may take.' }),
  s({ env: 'MQTT_BACKOFF_BASE_MS', key: 'mqttBackoffBaseMs', fallback: 500, example: '500', parse: int(1, 600_000), doc: 'Base of the exponential reconnect backoff (full jitter).' }),
  s({ env: 'MQTT_BACKOFF_CAP_MS', key: 'mqttBackoffCapMs', fallback: 30_000, example: '30000', parse: int(1, 3_600_000), doc: 'Cap of the reconnect backoff.' }),
  s({ env: 'LOG_LEVEL', key: 'logLevel', fallback: 'info', example: 'info', parse: logLevel, doc: 'fatal, error, warn, info, debug, trace or silent.' })
] as const

/** Env names that look like the worker's but are not read: most likely typos. */
export function unknownWorkerVariables (env: Readonly<Record<string, string | undefined>>): string[] {
  const known = new Set<string>(WORKER_SETTINGS.map((x) => x.env))
  return Object.keys(env).filter((k) => /^(LLM|WORKER)_/.test(k) && !known.has(k))
}

export function loadWorkerConfig (env: Readonly<Record<string, string | undefined>>): WorkerConfig {
  const out: Record<string, unknown> = {}
  for (const setting of WORKER_SETTINGS as readonly Setting<keyof WorkerConfig>[]) {
    const raw = env[setting.env]
    if (raw === '' && setting.emptyMeansOff === true) { out[setting.key] = undefined; continue }
    if (raw === undefined || raw === '') {
      if (setting.fallback === 'required') throw new ConfigError(setting.env, 'is required', setting.example)
      out[setting.key] = typeof setting.fallback === 'function' ? (setting.fallback as () => unknown)() : setting.fallback
      continue
    }
    const value = setting.parse(raw)
    if (isProblem(value)) throw new ConfigError(setting.env, value.problem, setting.example)
    out[setting.key] = value
  }
  const config = out as unknown as WorkerConfig
  if (config.mqttBackoffBaseMs > config.mqttBackoffCapMs) {
    throw new ConfigError('MQTT_BACKOFF_BASE_MS', `(${config.mqttBackoffBaseMs}) must not exceed MQTT_BACKOFF_CAP_MS (${config.mqttBackoffCapMs})`, '500')
  }
  return Object.freeze(config)
}
