/**
 * WebSocket close codes, in one table. Ranges tell a client what to do (after Centrifugo):
 * 1000-2999 as in RFC 6455 section 7.4.1; 4000-4499 "reconnect" (with backoff); 4500-4999
 * "do not reconnect" until something changes (the client's own behaviour or credentials).
 * docs/websocket.md documents each one; test/unit/close-codes.test.ts keeps them in step.
 */
export const CLOSE_CODES = {
  /** RFC 6455: a binary frame where text JSON is required. */
  unsupported_data: { code: 1003, reconnect: false, reason: 'binary frames are not supported' },
  /** RFC 6455: a frame over WS_MAX_PAYLOAD_BYTES (uWebSockets.js closes these itself). */
  message_too_big: { code: 1009, reconnect: false, reason: 'frame too large' },
  /** RFC 6455: the server failed handling this socket's input (a bug; it is logged and counted). */
  internal_error: { code: 1011, reconnect: true, reason: 'internal error; reconnect' },
  shutting_down: { code: 4000, reconnect: true, reason: 'server shutting down; reconnect' },
  slow_consumer: { code: 4001, reconnect: true, reason: 'too slow reading; reconnect' },
  token_expired: { code: 4002, reconnect: true, reason: 'token expired; log in and reconnect' },
  policy_violation: { code: 4500, reconnect: false, reason: 'too many invalid or rate-limited frames' }
} as const satisfies Record<string, { code: number, reconnect: boolean, reason: string }>

export type CloseReason = keyof typeof CLOSE_CODES
