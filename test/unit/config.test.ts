import t from 'tap'
import { ConfigError, GATEWAY_CONFIG, loadConfig, parseOrigins, SETTINGS, unknownVariables } from '../../src/config.js'

function problemOf (env: Record<string, string>): string {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('defaults match the documented ones', async (t) => {
  const c = loadConfig({})
  t.equal(c.port, 8000)
  t.equal(c.host, '0.0.0.0')
  t.equal(c.mqttUrl, undefined)
  t.equal(c.embeddedMqttPort, 1883)
  t.equal(c.mqttTopicPrefix, 'llm')
  t.equal(c.chatTimeoutMs, 90_000)
  t.equal(c.maxPending, 10_000)
  t.equal(c.maxPendingPerSession, 4)
  t.equal(c.maxBodyBytes, 65_536)
  t.equal(c.mqttKeepaliveS, 15)
  t.equal(c.mqttStaleAfterMs, 5000)
  t.equal(c.mqttProbeTimeoutMs, 2000)
  t.equal(c.mqttMaxReconnectAttempts, 10)
  t.equal(c.mqttBackoffBaseMs, 500)
  t.equal(c.mqttBackoffCapMs, 2000)
  t.equal(c.shutdownGraceMs, 10_000)
  t.equal(c.logLevel, 'info')
  t.match(c.instanceId, /^tether-[0-9a-f]{12}$/)
  t.ok(Object.isFrozen(c))
})

t.test('without MQTT_URL the demo responder is on; with it, only when DEMO_RESPONDER is set', async (t) => {
  t.equal(loadConfig({}).demoResponder, true)
  t.equal(loadConfig({ MQTT_URL: 'mqtt://127.0.0.1:1883' }).demoResponder, false)
  t.equal(loadConfig({ MQTT_URL: 'mqtt://127.0.0.1:1883', DEMO_RESPONDER: '1' }).demoResponder, true)
})

t.test('a bad value is one line naming the variable, the problem and an example', async (t) => {
  const line = problemOf({ PORT: 'eighty' })
  t.match(line, /^config: PORT must be a whole number, got "eighty" \(example: PORT=8000\)$/)
  t.notOk(line.includes('\n'))
  t.match(problemOf({ PORT: '70000' }), /PORT must be between 0 and 65535/)
  t.match(problemOf({ CHAT_TIMEOUT_MS: '1.5' }), /CHAT_TIMEOUT_MS must be a whole number/)
  t.match(problemOf({ MQTT_URL: 'http://x' }), /MQTT_URL must use mqtt:\/\//)
  t.match(problemOf({ MQTT_URL: 'mqtt://a:1883,mqtt://' }), /MQTT_URL entry 2 (is not a URL|has no host)/)
  t.equal(loadConfig({ MQTT_URL: 'mqtt://a:1883, mqtt://b:1883' }).mqttUrl, 'mqtt://a:1883,mqtt://b:1883', 'several nodes, spaces trimmed')
  t.equal(loadConfig({ MQTT_URL: 'mqtt://u:pa,ss@h:1883' }).mqttUrl, 'mqtt://u:pa,ss@h:1883', 'a comma in a password is not a second node')
  t.match(problemOf({ MQTT_URL: 'not a url' }), /MQTT_URL is not a URL/)
  t.match(problemOf({ MQTT_TOPIC_PREFIX: 'llm/#' }), /MQTT_TOPIC_PREFIX must not contain MQTT wildcards/)
  t.match(problemOf({ MQTT_TOPIC_PREFIX: 'a//b' }), /empty levels/)
  t.match(problemOf({ LOG_LEVEL: 'loud' }), /LOG_LEVEL must be one of/)
  t.match(problemOf({ DEMO_RESPONDER: 'maybe' }), /DEMO_RESPONDER must be one of/)
  t.match(problemOf({ INSTANCE_ID: 'a/b' }), /INSTANCE_ID must match/)
  t.match(problemOf({ MQTT_BACKOFF_BASE_MS: '5000', MQTT_BACKOFF_CAP_MS: '1000' }), /must not exceed MQTT_BACKOFF_CAP_MS/)
})

t.test('CORS_ORIGINS takes a JSON array or a comma list', async (t) => {
  t.same(loadConfig({ CORS_ORIGINS: '["https://a.example","http://localhost:3000"]' }).corsOrigins, ['https://a.example', 'http://localhost:3000'])
  t.same(loadConfig({ CORS_ORIGINS: 'https://a.example, http://localhost:3000' }).corsOrigins, ['https://a.example', 'http://localhost:3000'])
  t.same(loadConfig({ CORS_ORIGINS: '*' }).corsOrigins, ['*'])
  t.same(loadConfig({ CORS_ORIGINS: '' }).corsOrigins, [])
})

t.test('a malformed CORS_ORIGINS JSON array is a clear error, not a stack trace', async (t) => {
  t.match(problemOf({ CORS_ORIGINS: '["https://a.example",' }), /^config: CORS_ORIGINS looks like a JSON array but does not parse/)
  t.match(problemOf({ CORS_ORIGINS: '[1,2]' }), /CORS_ORIGINS must be a JSON array of strings/)
  t.match(problemOf({ CORS_ORIGINS: 'https://a.example/path' }), /must be scheme:\/\/host\[:port\] only/)
  const p = parseOrigins('nonsense')
  t.ok('problem' in p)
})

t.test('variables that look like ours but are unknown are reported as likely typos', async (t) => {
  t.same(unknownVariables({ MQTT_KEEPALIVE: '15', MQTT_URL: 'x', PATH: '/bin', MQTT_TEST_URL: 'x' }), ['MQTT_KEEPALIVE'])
})

t.test('the former names of renamed settings are still read, and reported as deprecated', async (t) => {
  const env = { WORKER_THREADS: '3', WORKER_NICE: '5', WORKER_MAX_QUEUE: '7', WORKER_TASK_TIMEOUT_MS: '900', WORKER_INLINE: '1', DEMO_WORKER: '1', MQTT_URL: 'mqtt://127.0.0.1:1883' }
  const c = loadConfig(env)
  t.same([c.threads, c.threadNice, c.threadMaxQueue, c.threadTaskTimeoutMs, c.threadInline, c.demoResponder], [3, 5, 7, 900, true, true])
  t.same(GATEWAY_CONFIG.deprecatedVariables(env).map((d) => `${d.name}->${d.replacement}`).sort(), [
    'DEMO_WORKER->DEMO_RESPONDER', 'WORKER_INLINE->THREAD_INLINE', 'WORKER_MAX_QUEUE->THREAD_MAX_QUEUE',
    'WORKER_NICE->THREAD_NICE', 'WORKER_TASK_TIMEOUT_MS->THREAD_TASK_TIMEOUT_MS', 'WORKER_THREADS->THREADS'
  ])
  t.same(unknownVariables(env), [], 'a former name is not a typo')
  t.equal(loadConfig({ THREADS: '2', WORKER_THREADS: '3' }).threads, 2, 'the new name wins when both are set')
  t.match(problemOf({ WORKER_THREADS: 'many' }), /^config: WORKER_THREADS must be a whole number/, 'a bad former value is reported under the name that was set')
})

t.test('every setting has a doc, an example that parses, and a distinct name', async (t) => {
  const names = SETTINGS.flatMap((s) => [s.env, ...(s.formerly ?? [])])
  t.equal(new Set(names).size, names.length)
  for (const s of SETTINGS) {
    t.ok(s.doc.length > 10, `${s.env} has a doc`)
    if (s.env === 'NODE_ENV' || s.env === 'AUTH_SECRET') continue
    t.doesNotThrow(() => loadConfig({ [s.env]: s.example }), `${s.env}=${s.example} is accepted`)
  }
})
