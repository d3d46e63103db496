/**
 * The MQTT link's settings, shared by every program that holds a link (the gateway, the LLM
 * worker, the demo responder), so a link behaves and is configured the same everywhere.
 * MQTT_URL is not here: the gateway may run without one (embedded broker), the worker may not.
 */
import { ConfigError, settingOf, type Setting } from './kernel.js'
import { int, oneOf, topicPrefix } from './parsers.js'

/** MQTT_PROTOCOL: `auto` tries MQTT 5 and falls back to 3.1.1 for a broker that does not speak it. */
export type MqttProtocol = 'auto' | '5' | '3.1.1'

export interface MqttLinkSettings {
  readonly mqttTopicPrefix: string
  readonly mqttKeepaliveS: number
  readonly mqttProbeTimeoutMs: number
  readonly mqttConnectTimeoutMs: number
  readonly mqttMaxReconnectAttempts: number
  readonly mqttBackoffBaseMs: number
  readonly mqttBackoffCapMs: number
  readonly mqttProtocol: MqttProtocol
  readonly mqttSubscribeQos: 0 | 1
}

const s = settingOf<MqttLinkSettings>()

const LINK_SETTINGS = [
  s({ env: 'MQTT_TOPIC_PREFIX', key: 'mqttTopicPrefix', fallback: 'llm', example: 'llm', parse: topicPrefix, doc: 'First level(s) of every topic; the gateway and its LLM workers must use the same.' }),
  s({ env: 'MQTT_PROTOCOL', key: 'mqttProtocol', fallback: 'auto', example: 'auto', parse: oneOf<MqttProtocol>(['auto', '5', '3.1.1']), doc: 'MQTT version. `auto`: MQTT 5, and 3.1.1 when the broker does not answer a version 5 CONNECT (the fallback is logged once); the embedded broker speaks 3.1.1. With 5, chat requests carry a Message Expiry Interval (the deadline), Response Topic and Correlation Data, and a PUBACK saying "no matching subscribers" answers the chat `503 no_workers` at once.' }),
  s({ env: 'MQTT_SUBSCRIBE_QOS', key: 'mqttSubscribeQos', fallback: 1, example: '1', parse: (raw) => { const n = oneOf(['0', '1'])(raw); return n === '0' ? 0 : 1 }, doc: 'The highest QoS this program subscribes with (messages are still published at QoS 1). `0` for NATS (JetStream-backed MQTT): a QoS 1 subscription there is a JetStream consumer, which NATS 2.9 cannot create while a cluster node is down, and whose node\'s loss can silence it; a QoS 0 one is a plain subscription. With clean sessions (Tether\'s) a QoS 1 subscription only adds redelivery within one connection, which a link loss ends anyway (docs/brokers.md).' }),
  s({ env: 'MQTT_KEEPALIVE_S', key: 'mqttKeepaliveS', fallback: 15, example: '15', parse: int(1, 3600), doc: 'MQTT keepalive, and the idle period after which the link is probed.' }),
  s({ env: 'MQTT_PROBE_TIMEOUT_MS', key: 'mqttProbeTimeoutMs', fallback: 2000, example: '2000', parse: int(10, 600_000), doc: 'How long a probe may take before the link is dropped and rebuilt.' }),
  s({ env: 'MQTT_CONNECT_TIMEOUT_MS', key: 'mqttConnectTimeoutMs', fallback: 5000, example: '5000', parse: int(50, 600_000), doc: 'How long one connection attempt (TCP + CONNACK) may take.' }),
  s({ env: 'MQTT_MAX_RECONNECT_ATTEMPTS', key: 'mqttMaxReconnectAttempts', fallback: 10, example: '10', parse: int(0, 1_000_000), doc: 'Failed reconnects before the link reports `givingUp` (it keeps retrying at the cap).' }),
  s({ env: 'MQTT_BACKOFF_BASE_MS', key: 'mqttBackoffBaseMs', fallback: 500, example: '500', parse: int(1, 600_000), doc: 'Base of the exponential reconnect backoff (full jitter).' }),
  s({ env: 'MQTT_BACKOFF_CAP_MS', key: 'mqttBackoffCapMs', fallback: 2000, example: '2000', parse: int(1, 3_600_000), doc: 'Cap of the reconnect backoff; also the retry interval while `givingUp`. Once the broker answers again the link is back within this (plus one connect); a fleet of N gateways sends a broker that is away about N / (cap / 2) attempts a second once the backoff is at its cap, spread by the jitter (measured: 1.6 a second per gateway over a 5 s outage, the first waits being shorter; 100 gateways, ~160 a second). It used to be 30 s: after a 5 s outage users could wait 50 s for the link.' })
]

/** The group, typed for a program whose config includes it. */
export function mqttLinkSettings<C extends MqttLinkSettings> (): ReadonlyArray<Setting<C>> {
  return LINK_SETTINGS as unknown as ReadonlyArray<Setting<C>>
}

/** The rule between the group's settings; throws ConfigError. */
export function checkMqttLinkSettings (config: MqttLinkSettings): void {
  if (config.mqttBackoffBaseMs > config.mqttBackoffCapMs) {
    throw new ConfigError('MQTT_BACKOFF_BASE_MS', `(${config.mqttBackoffBaseMs}) must not exceed MQTT_BACKOFF_CAP_MS (${config.mqttBackoffCapMs})`, '500')
  }
}

/** The createMqttLink options the group decides. */
export function linkTimings (config: MqttLinkSettings): {
  keepaliveS: number
  probeTimeoutMs: number
  connectTimeoutMs: number
  maxReconnectAttempts: number
  backoffBaseMs: number
  backoffCapMs: number
  protocol: MqttProtocol
  subscribeQos: 0 | 1
} {
  return {
    keepaliveS: config.mqttKeepaliveS,
    probeTimeoutMs: config.mqttProbeTimeoutMs,
    connectTimeoutMs: config.mqttConnectTimeoutMs,
    maxReconnectAttempts: config.mqttMaxReconnectAttempts,
    backoffBaseMs: config.mqttBackoffBaseMs,
    backoffCapMs: config.mqttBackoffCapMs,
    protocol: config.mqttProtocol,
    subscribeQos: config.mqttSubscribeQos
  }
}
