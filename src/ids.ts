import { randomUUID } from 'node:crypto'

/**
 * Session, request and instance ids all match this: it keeps MQTT wildcards (+, #), the level
 * separator (/) and NUL out of every topic an id is put into (contract: Identifiers).
 */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

export function isValidId (value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value)
}

/** What every refusal of an id says, HTTP, WebSocket and configuration alike. */
export const ID_RULE = 'must match [A-Za-z0-9_-]{1,64}'

export function idRule (name: string): string {
  return `${name} ${ID_RULE}`
}

/** 36 characters from [0-9a-f-]: valid under ID_PATTERN. */
export function newRequestId (): string {
  return randomUUID()
}
