/**
 * The LLM worker's one typed configuration object, built like the gateway's (src/config.ts)
 * from the same kernel and the same MQTT link settings (src/settings/): every variable in
 * WORKER_SETTINGS with its default, an example and its doc (docs/worker.md's table is
 * generated from them), validated at start-up into a frozen object.
 */
import { randomBytes } from 'node:crypto'
import { defineConfig, REQUIRED, settingOf, type Env } from '../settings/kernel.js'
import { checkMqttLinkSettings, mqttLinkSettings, type MqttLinkSettings } from '../settings/mqtt-link-settings.js'
import { bool, identifier, int, logLevel, mqttUrl, problem, text, type LogLevel, type Problem } from '../settings/parsers.js'

export { ConfigError, EXIT_CONFIG } from '../settings/kernel.js'

export interface WorkerConfig extends MqttLinkSettings {
  readonly mqttUrl: string
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
  /** Announce presence (heartbeats, last will, ack, own request topic): contract v1.1. */
  readonly workerAnnounce: boolean
  readonly workerHeartbeatMs: number
  readonly logLevel: LogLevel
}

function httpUrl (raw: string): string | Problem {
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

function model (raw: string): string | Problem {
  return raw.trim() === '' || raw.length > 256 ? problem('must be 1 to 256 characters') : raw
}

function apiKey (raw: string): string | Problem {
  // A header value with a newline would be refused by fetch later, far from the cause.
  return /^[\x21-\x7e]+$/.test(raw) ? raw : problem('must be printable ASCII without spaces')
}

const s = settingOf<WorkerConfig>()

/** Every variable, in the order docs/worker.md's table lists them. */
export const WORKER_SETTINGS = [
  s({ env: 'MQTT_URL', key: 'mqttUrl', fallback: REQUIRED, example: 'mqtt://127.0.0.1:1883', parse: mqttUrl, doc: 'The broker, `mqtt://[user:password@]host[:port]`. The same one the gateway uses.' }),
  ...mqttLinkSettings<WorkerConfig>(),
  s({ env: 'LLM_BASE_URL', key: 'llmBaseUrl', fallback: REQUIRED, example: 'http://127.0.0.1:11434', parse: httpUrl, doc: 'The model server\'s base URL, `http://` or `https://`. The worker calls `<base>/v1/chat/completions`; a trailing `/v1` or `/` is accepted and dropped. No credentials in the URL (use `LLM_API_KEY`).' }),
  s({ env: 'LLM_API_KEY', key: 'llmApiKey', fallback: undefined, example: 'sk-...', parse: apiKey, doc: 'Sent as `Authorization: Bearer <key>`. Unset: no Authorization header. Never logged, and redacted from error text that quotes it.' }),
  s({ env: 'LLM_MODEL', key: 'llmModel', fallback: REQUIRED, example: 'llama3.2', parse: model, doc: 'The `model` of every request (`llama3.2`, `Qwen/Qwen2.5-7B-Instruct`, `gpt-4o-mini`, ...).' }),
  s({ env: 'LLM_SYSTEM_PROMPT', key: 'llmSystemPrompt', fallback: undefined, example: 'You are a concise assistant.', parse: text, doc: 'Sent first, as a `system` message, before the history.' }),
  s({ env: 'LLM_CONNECT_TIMEOUT_MS', key: 'llmConnectTimeoutMs', fallback: 10_000, example: '10000', parse: int(50, 600_000), doc: 'From sending a request to the model server\'s response headers (time to first byte). Past it: an `error` reply. After the headers only the request\'s deadline bounds the stream. Raise it for servers that load the model on first use (Ollama).' }),
  s({ env: 'WORKER_CONCURRENCY', key: 'workerConcurrency', fallback: 8, example: '8', parse: int(1, 10_000), doc: 'Model calls in flight at once. Match it to what the model server serves in parallel (vLLM: its batch size; Ollama: `OLLAMA_NUM_PARALLEL`).' }),
  s({ env: 'WORKER_QUEUE', key: 'workerQueue', fallback: 64, example: '64', parse: int(0, 1_000_000), doc: 'Requests waiting for a free slot, oldest first. Beyond it a request is answered `error` `worker overloaded` at once. `0`: no waiting at all.' }),
  s({ env: 'WORKER_SHARED_GROUP', key: 'workerSharedGroup', fallback: 'tether-workers', example: 'tether-workers', parse: identifier, emptyMeansOff: true, doc: 'Subscribe as `$share/<group>/<prefix>/chat/request`, so each request goes to one worker of the group. Empty (`WORKER_SHARED_GROUP=`): a plain subscription; see below.' }),
  s({ env: 'WORKER_ID', key: 'workerId', fallback: () => `worker-${randomBytes(6).toString('hex')}`, example: 'worker-a1', parse: identifier, defaultDoc: '`worker-<random>`', doc: 'MQTT client id and the `worker_id` of every log line. Must be unique per broker: two clients with one id knock each other off.' }),
  s({ env: 'WORKER_SHUTDOWN_GRACE_MS', key: 'workerShutdownGraceMs', fallback: 10_000, example: '10000', parse: int(0, 600_000), doc: 'On SIGTERM/SIGINT, how long accepted requests may still finish.' }),
  s({ env: 'WORKER_ANNOUNCE', key: 'workerAnnounce', fallback: true, example: '1', parse: bool, doc: 'Announce this worker to the gateways (contract v1.1): heartbeats on `llm/workers/<WORKER_ID>` with its capacity (`WORKER_CONCURRENCY` + `WORKER_QUEUE`) and load, an MQTT last will saying `offline`, requests on its own topic `llm/chat/request/<WORKER_ID>` acknowledged with `ack` and refused with `busy` when full. It still takes requests on the shared topic from gateways that predate presence. `0`: a v1 worker.' }),
  s({ env: 'WORKER_HEARTBEAT_MS', key: 'workerHeartbeatMs', fallback: 1000, example: '1000', parse: int(100, 60_000), doc: 'Interval between heartbeats. A gateway takes the worker for offline after 3 intervals of silence and moves or ends its chats, so this bounds how long users wait on a worker that froze.' }),
  s({ env: 'LOG_LEVEL', key: 'logLevel', fallback: 'info', example: 'info', parse: logLevel, doc: '`fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`.' })
]

export const WORKER_CONFIG = defineConfig<WorkerConfig>({
  settings: WORKER_SETTINGS,
  ours: /^(LLM|WORKER)_/,
  check: (config) => { checkMqttLinkSettings(config); return config }
})

export const loadWorkerConfig = (env: Env): WorkerConfig => WORKER_CONFIG.load(env)
export const unknownWorkerVariables = (env: Env): string[] => WORKER_CONFIG.unknownVariables(env)
