/**
 * Reads a request body with a hard size limit. uWebSockets.js lends each chunk only for the
 * duration of the callback, so chunks are copied; past `maxBytes` reading stops and the
 * caller answers 413 (closing the connection, since the rest of the body is never read).
 */
import type { HttpResponse } from 'uWebSockets.js'

export type BodyResult = { ok: true, body: Buffer } | { ok: false, reason: 'too_large' }

export function readBody (res: HttpResponse, declaredLength: string, maxBytes: number, done: (result: BodyResult) => void): void {
  if (declaredLength !== '' && Number(declaredLength) > maxBytes) {
    done({ ok: false, reason: 'too_large' })
    return
  }
  const parts: Buffer[] = []
  let size = 0
  let finished = false
  res.onData((chunk, isLast) => {
    if (finished) return
    size += chunk.byteLength
    if (size > maxBytes) {
      finished = true
      done({ ok: false, reason: 'too_large' })
      return
    }
    // Copy: the ArrayBuffer is reused by uWS after this callback returns.
    parts.push(Buffer.from(new Uint8Array(chunk)))
    if (isLast) {
      finished = true
      done({ ok: true, body: parts.length === 1 ? parts[0] as Buffer : Buffer.concat(parts, size) })
    }
  })
}
