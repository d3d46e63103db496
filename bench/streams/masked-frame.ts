/**
 * A client's WebSocket text frame, built and masked ahead of time, so that a burst of them is
 * one socket write each. Sent through `ws`'s own `send`, 1,000 frames took the bench process
 * 22-40 ms (masking, framing and a write each through Node's stream machinery), and a process
 * that is still sending cannot read: the first replies waited for the last send, and the
 * figure measured the bench's loop rather than the gateway.
 */
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type WebSocket from 'ws'

export function maskedTextFrame (text: string): Buffer {
  const payload = Buffer.from(text, 'utf8')
  const n = payload.length
  const lengthBytes = n < 126 ? 0 : n < 65_536 ? 2 : 8
  const frame = Buffer.alloc(2 + lengthBytes + 4 + n)
  frame[0] = 0x81 // FIN, text
  if (lengthBytes === 0) {
    frame[1] = 0x80 | n
  } else if (lengthBytes === 2) {
    frame[1] = 0x80 | 126
    frame.writeUInt16BE(n, 2)
  } else {
    frame[1] = 0x80 | 127
    frame.writeBigUInt64BE(BigInt(n), 2)
  }
  const maskAt = 2 + lengthBytes
  const mask = randomBytes(4)
  mask.copy(frame, maskAt)
  for (let i = 0; i < n; i++) frame[maskAt + 4 + i] = (payload[i] as number) ^ (mask[i & 3] as number)
  return frame
}

/** The open socket under a `ws` client (its `_socket`, stable across ws 8). */
export function rawSocketOf (ws: WebSocket): Socket {
  const socket = (ws as unknown as { _socket?: Socket })._socket
  if (socket === undefined) throw new Error('the WebSocket has no underlying socket (not open?)')
  return socket
}
