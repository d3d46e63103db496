/**
 * The gateways of bench:chat: relay and persistent differ in CHAT_MODE only, the heap phase's
 * in-process gateway gets the same variables, and the pool size is the gateway's default unless
 * BENCH_DB_POOL_SIZE says otherwise. Timeouts and history limits stay at the gateway's defaults.
 */
import { LIMITS_LIFTED, linkEnv, startGateway, type Gateway, type LinkOptions } from '../lib/gateway.js'

export type ChatMode = 'relay' | 'persistent'

export interface ChatGatewayOptions extends Omit<LinkOptions, 'port' | 'chatMode'> {
  /** relay: no token, nothing stored; persistent: Bearer token, owned sessions, both turns stored. */
  readonly chatMode: ChatMode
  /** DB_POOL_SIZE; undefined keeps the gateway's default. */
  readonly dbPoolSize?: number
  /** MQTT_PROTOCOL (BENCH_MQTT_PROTOCOL); undefined keeps the gateway's default (auto). */
  readonly mqttProtocol?: string
}

export function chatGatewayEnv (o: ChatGatewayOptions, port: number): Record<string, string> {
  return {
    ...linkEnv({ ...o, port }),
    ...LIMITS_LIFTED,
    ...(o.dbPoolSize === undefined ? {} : { DB_POOL_SIZE: String(o.dbPoolSize) }),
    ...(o.mqttProtocol === undefined ? {} : { MQTT_PROTOCOL: o.mqttProtocol })
  }
}

export async function startChatGateway (o: ChatGatewayOptions & { logFile: string, readyTimeoutMs: number, nodeArgs: readonly string[] }): Promise<Gateway> {
  return await startGateway({ label: o.chatMode, env: (port) => chatGatewayEnv(o, port), logFile: o.logFile, readyTimeoutMs: o.readyTimeoutMs, nodeArgs: o.nodeArgs })
}
