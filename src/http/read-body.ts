/**
 * Reads a request body with a hard size limit. uWebSockets.js lends each chunk only for the
 * duration of the callback, so chunks are copied. Past `maxBytes` nothing more is kept, but
 * the rest of the body is still read and thrown away (nginx's "lingering close"), for a
 * bounded time and size, before the caller answers 413: closing a socket with unread bytes in
 * its receive buffer makes the kernel send a reset, which can destroy the 413 on its way to a
 * client that is still sending — 20 to 23 of 30 posts of 1.5 and 10 MB got a reset instead.
 * A body that drains within the bounds is answered on a connection that stays open; one that
 * does not is answered and the connection closed.
 */
import type { HttpResponse } from 'uWebSockets.js'
import { systemClock, type Clock } from '../clock.js'

export type BodyResult =
  | { ok: true, body: Buffer }
  /** `drained`: the whole body was read, so the connection can carry another request. */
  | { ok: false, reason: 'too_large', drained: boolean }

export interface LingerLimits {
  /** Bytes past the limit read and discarded at most. */
  maxBytes: number
  /** How long the discarding may take at most. */
  maxMs: number
  clock: Pick<Clock, 'setTimeout' | 'clearTimeout'>
}

/** nginx lingers 30 s; a refused upload is not worth that long here, and 5 s covers 10 MB on a slow link. */
export const DEFAULT_LINGER: LingerLimits = { maxBytes: 16 * 1024 * 1024, maxMs: 5000, clock: systemClock }

export function readBody (res: HttpResponse, declaredLength: string, maxBytes: number, done: (result: BodyResult) => void, linger: LingerLimits = DEFAULT_LINGER): void {
  const declared = declaredLength === '' ? null : Number(declaredLength)
  if (declared !== null && declared > maxBytes + linger.maxBytes) {
    // Too much even to discard: answer at once and close.
    res.onData(() => {})
    done({ ok: false, reason: 'too_large', drained: false })
    return
  }
  const parts: Buffer[] = []
  let size = 0
  let finished = false
  let discarding = false
  let timer: unknown = null
  const refuse = (drained: boolean): void => {
    finished = true
    if (timer !== null) linger.clock.clearTimeout(timer)
    done({ ok: false, reason: 'too_large', drained })
  }
  const discard = (): void => {
    discarding = true
    parts.length = 0
    timer = linger.clock.setTimeout(() => { timer = null; if (!finished) refuse(false) }, linger.maxMs)
  }
  if (declared !== null && declared > maxBytes) discard()
  res.onData((chunk, isLast) => {
    if (finished) return
    size += chunk.byteLength
    if (discarding) {
      if (isLast) refuse(true)
      else if (size > maxBytes + linger.maxBytes) refuse(false)
      return
    }
    if (size > maxBytes) {
      discard()
      if (isLast) refuse(true)
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
