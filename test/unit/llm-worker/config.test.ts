import t from 'tap'
import { ConfigError, loadWorkerConfig, unknownWorkerVariables } from '../../../src/llm-worker/config.js'

const REQUIRED = { MQTT_URL: 'mqtt://127.0.0.1:1883', LLM_BASE_URL: 'http://127.0.0.1:11434', LLM_MODEL: 'llama3.2' }

function problemOf (env: Record<string, string>): string {
  try {
    loadWorkerConfig({ ...REQUIRED, ...env })
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('defaults match the documented ones', async (t) => {
  const c = loadWorkerConfig(REQUIRED)
  t.equal(c.mqttUrl, 'mqtt://127.0.0.1:1883')
  t.equal(c.mqttTopicPrefix, 'llm')
  t.equal(c.llmBaseUrl, 'http://127.0.0.1:11434')
  t.equal(c.llmApiKey, undefined)
  t.equal(c.llmModel, 'llama3.2')
  t.equal(c.llmSystemPrompt, undefined)
  t.equal(c.llmConnectTimeoutMs, 10_000)
  t.equal(c.workerConcurrency, 8)
  t.equal(c.workerQueue, 64)
  t.equal(c.workerSharedGroup, 'tether-workers')
  t.match(c.workerId, /^worker-[0-9a-f]{12}$/)
  t.equal(c.workerShutdownGraceMs, 10_000)
  t.equal(c.logLevel, 'info')
  t.ok(Object.isFrozen(c))
})

t.test('MQTT_URL, LLM_BASE_URL and LLM_MODEL are required', async (t) => {
  for (const name of Object.keys(REQUIRED)) {
    t.match(problemOf({ [name]: '' }), new RegExp(`^config: ${name} is required \\(example: ${name}=`), name)
  }
})

t.test('WORKER_SHARED_GROUP set to empty turns the shared subscription off', async (t) => {
  t.equal(loadWorkerConfig({ ...REQUIRED, WORKER_SHARED_GROUP: '' }).workerSharedGroup, undefined)
  t.equal(loadWorkerConfig({ ...REQUIRED, WORKER_SHARED_GROUP: 'gpu-pool' }).workerSharedGroup, 'gpu-pool')
  t.match(problemOf({ WORKER_SHARED_GROUP: 'a/b' }), /WORKER_SHARED_GROUP must match/)
  t.match(problemOf({ WORKER_SHARED_GROUP: '#' }), /WORKER_SHARED_GROUP must match/)
})

t.test('LLM_BASE_URL is normalised: a trailing slash or /v1 is dropped, a path prefix kept', async (t) => {
  const base = (url: string): string => loadWorkerConfig({ ...REQUIRED, LLM_BASE_URL: url }).llmBaseUrl
  t.equal(base('http://127.0.0.1:11434/'), 'http://127.0.0.1:11434')
  t.equal(base('https://api.openai.com/v1'), 'https://api.openai.com')
  t.equal(base('https://api.openai.com/v1/'), 'https://api.openai.com')
  t.equal(base('https://gw.example/openai/v1'), 'https://gw.example/openai')
})

t.test('LLM_BASE_URL must be http(s), without credentials or a query, and is never echoed', async (t) => {
  t.match(problemOf({ LLM_BASE_URL: 'ftp://x' }), /must use http:\/\/ or https:\/\//)
  t.match(problemOf({ LLM_BASE_URL: 'not a url' }), /LLM_BASE_URL is not a URL/)
  const withCredentials = problemOf({ LLM_BASE_URL: 'https://user:hunter2@x.example' })
  t.match(withCredentials, /must not carry credentials/)
  t.notMatch(withCredentials, /hunter2/)
  t.match(problemOf({ LLM_BASE_URL: 'http://x/?key=1' }), /query/)
})

t.test('numbers are checked against their ranges', async (t) => {
  t.match(problemOf({ WORKER_CONCURRENCY: '0' }), /WORKER_CONCURRENCY must be between 1/)
  t.match(problemOf({ WORKER_QUEUE: '-1' }), /WORKER_QUEUE must be between 0/)
  t.equal(loadWorkerConfig({ ...REQUIRED, WORKER_QUEUE: '0' }).workerQueue, 0, 'no queue at all is allowed')
  t.match(problemOf({ LLM_CONNECT_TIMEOUT_MS: '1.5' }), /must be a whole number/)
  t.match(problemOf({ MQTT_BACKOFF_BASE_MS: '5000', MQTT_BACKOFF_CAP_MS: '100' }), /must not exceed MQTT_BACKOFF_CAP_MS/)
})

t.test('other values are checked too', async (t) => {
  t.match(problemOf({ MQTT_URL: 'http://x' }), /MQTT_URL must use mqtt:\/\//)
  t.match(problemOf({ MQTT_TOPIC_PREFIX: 'a/#' }), /wildcards/)
  t.match(problemOf({ WORKER_ID: 'has space' }), /WORKER_ID must match/)
  t.match(problemOf({ LLM_API_KEY: 'sk with space' }), /LLM_API_KEY must be printable ASCII/)
  t.notMatch(problemOf({ LLM_API_KEY: 'sk with space' }), /sk with space/, 'the key is not echoed')
  t.match(problemOf({ LOG_LEVEL: 'loud' }), /LOG_LEVEL must be one of/)
})

t.test('look-alike variables that are not read are reported as likely typos', async (t) => {
  t.same(unknownWorkerVariables({ ...REQUIRED, WORKER_CONCURENCY: '4', LLM_MODLE: 'x', PATH: '/bin', WORKER_QUEUE: '3' }), ['WORKER_CONCURENCY', 'LLM_MODLE'])
})
