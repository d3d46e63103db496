/**
 * A decoder for `text/event-stream` (WHATWG HTML, 9.2.6 "Interpreting an event stream"),
 * reduced to what OpenAI-compatible servers use: the `data` of each event. Text arrives in
 * arbitrary pieces (a line, or even a CRLF, may be split across network reads), so the decoder
 * keeps the unfinished line between calls.
 */

export class SseLineTooLongError extends Error {
  constructor (limit: number) {
    super(`event-stream line longer than ${limit} characters`)
    this.name = 'SseLineTooLongError'
  }
}

export interface SseDecoder {
  /** Feeds decoded text; returns the data of every event completed by it, in order. */
  push: (text: string) => string[]
  /** The stream ended: completes a last event that lacks its blank line (lenient). */
  end: () => string[]
}

/** 1 MiB of one line: far beyond any real delta, small enough that a broken server cannot exhaust memory. */
export const MAX_LINE_CHARS = 1024 * 1024

export function createSseDecoder (maxLineChars = MAX_LINE_CHARS): SseDecoder {
  let buffer = ''
  let data: string[] = []
  let sawFirstLine = false

  function dispatch (out: string[]): void {
    // Spec: an event with an empty data buffer is not dispatched.
    if (data.length > 0) out.push(data.join('\n'))
    data = []
  }

  function onLine (line: string, out: string[]): void {
    if (!sawFirstLine) {
      sawFirstLine = true
      if (line.startsWith('\uFEFF')) line = line.slice(1)
    }
    if (line === '') { dispatch(out); return }
    if (line.startsWith(':')) return // comment (servers send these as keep-alives)
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    // `event`, `id` and `retry` carry nothing OpenAI-compatible servers rely on.
    if (field === 'data') data.push(value)
  }

  function lines (final: boolean): string[] {
    const out: string[] = []
    let pos = 0
    // Each search runs again only once passed, so a large read costs one scan, not one per line.
    let lf = buffer.indexOf('\n')
    let cr = buffer.indexOf('\r')
    for (;;) {
      if (lf !== -1 && lf < pos) lf = buffer.indexOf('\n', pos)
      if (cr !== -1 && cr < pos) cr = buffer.indexOf('\r', pos)
      let end: number
      let next: number
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        // A CR last in the buffer may be the first half of a CRLF split across reads.
        if (cr === buffer.length - 1 && !final) break
        end = cr
        next = buffer[cr + 1] === '\n' ? cr + 2 : cr + 1
      } else if (lf !== -1) {
        end = lf
        next = lf + 1
      } else {
        break
      }
      onLine(buffer.slice(pos, end), out)
      pos = next
    }
    buffer = buffer.slice(pos)
    if (buffer.length > maxLineChars) throw new SseLineTooLongError(maxLineChars)
    if (final) {
      if (buffer !== '') onLine(buffer, out)
      buffer = ''
      dispatch(out)
    }
    return out
  }

  return {
    push (text) {
      buffer += text
      return lines(false)
    },
    end () {
      return lines(true)
    }
  }
}
