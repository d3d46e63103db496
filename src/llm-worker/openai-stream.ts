/**
 * The upstream call: one streaming `POST <base>/v1/chat/completions` to an OpenAI-compatible
 * server (OpenAI, Ollama, vLLM, llama.cpp server), turned into the text deltas it carries.
 * Every failure becomes an UpstreamError whose message is safe to relay to the gateway (and so
 * to the end user): status, a short reason, never the API key or the request.
 */
import type { Clock } from '../clock.js'
import type { HistoryTurn } from '../mqtt/protocol.js'
import { createSseDecoder, SseLineTooLongError } from './sse.js'

/** A failure whose message may be shown to the user who asked. */
export class UpstreamError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UpstreamError'
  }
}

export interface UpstreamInput {
  readonly history: readonly HistoryTurn[]
  readonly content: string
}

export interface Upstream {
  /**
   * Yields the reply's text piece by piece. Throws UpstreamError on any failure; when `signal`
   * aborts it stops with whatever the abort threw (the caller knows why it aborted).
   */
  stream: (input: UpstreamInput, signal: AbortSignal) => AsyncIterable<string>
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

export interface OpenAiUpstreamOptions {
  /** Without the /v1 suffix: the config normalises it. */
  baseUrl: string
  apiKey: string | undefined
  model: string
  systemPrompt: string | undefined
  /** From sending the request to the response headers (time to first byte). */
  connectTimeoutMs: number
  clock: Clock
  /** Injected for tests; Node 20's global (undici) fetch otherwise. */
  fetch?: typeof globalThis.fetch
}

/** An error body is read for its message up to this size; the rest is not worth waiting for. */
const MAX_ERROR_BODY_BYTES = 8192
/** A non-streamed JSON answer (a server that ignored `stream: true`) larger than this is refused. */
const MAX_JSON_BODY_BYTES = 8 * 1024 * 1024
/** Upstream text quoted in an error reply; the gateway passes on at most 500 characters. */
const MAX_DETAIL_CHARS = 200

export function buildMessages (systemPrompt: string | undefined, input: UpstreamInput): ChatMessage[] {
  const messages: ChatMessage[] = []
  if (systemPrompt !== undefined) messages.push({ role: 'system', content: systemPrompt })
  for (const turn of input.history) messages.push({ role: turn.role, content: turn.content })
  messages.push({ role: 'user', content: input.content })
  return messages
}

/**
 * What one `data:` payload of a chat.completion.chunk stream means: `text` to relay (if any),
 * whether it carried a `finish_reason` (some servers put it on the last text chunk), and
 * whether it was the `[DONE]` sentinel.
 */
export interface StreamEvent { text: string | null, finished: boolean, done: boolean }

const NOTHING: StreamEvent = { text: null, finished: false, done: false }

export function interpretData (data: string): StreamEvent {
  if (data.trim() === '[DONE]') return { text: null, finished: false, done: true }
  let value: unknown
  try { value = JSON.parse(data) } catch { throw new UpstreamError('model server sent a malformed stream (an event is not JSON)') }
  if (typeof value !== 'object' || value === null) throw new UpstreamError('model server sent a malformed stream (an event is not an object)')
  const chunk = value as { error?: unknown, choices?: unknown }
  // vLLM and OpenAI report failures after the headers as an `error` event in the stream.
  if (chunk.error !== undefined) throw new UpstreamError(`model server error: ${errorText(chunk.error) ?? 'unspecified'}`)
  if (!Array.isArray(chunk.choices)) throw new UpstreamError('model server sent a malformed stream (no choices)')
  // OpenAI's usage chunk (stream_options.include_usage) has no choices at all.
  const choice = chunk.choices[0] as { delta?: { content?: unknown }, finish_reason?: unknown } | undefined
  if (choice === undefined) return NOTHING
  if (typeof choice !== 'object' || choice === null) throw new UpstreamError('model server sent a malformed stream (a choice is not an object)')
  const content = choice.delta?.content
  if (content !== undefined && content !== null && typeof content !== 'string') {
    throw new UpstreamError('model server sent a malformed stream (delta content is not text)')
  }
  return {
    text: typeof content === 'string' && content !== '' ? content : null,
    finished: typeof choice.finish_reason === 'string',
    done: false
  }
}

/** The deltas of an event-stream body; ends at `[DONE]`, or at the end of a stream that announced a finish. */
export async function * streamDeltas (body: AsyncIterable<Uint8Array>): AsyncGenerator<string, void, undefined> {
  const sse = createSseDecoder()
  // fatal: invalid UTF-8 is a broken stream, not text to pass on with replacement characters.
  const utf8 = new TextDecoder('utf-8', { fatal: true })
  const decode = (bytes?: Uint8Array): string => {
    try { return bytes === undefined ? utf8.decode() : utf8.decode(bytes, { stream: true }) } catch {
      throw new UpstreamError('model server sent a malformed stream (invalid UTF-8)')
    }
  }
  async function * datas (): AsyncGenerator<string, void, undefined> {
    try {
      for await (const bytes of body) yield * sse.push(decode(bytes))
      yield * sse.push(decode())
      yield * sse.end()
    } catch (err) {
      if (err instanceof SseLineTooLongError) throw new UpstreamError(`model server sent a malformed stream (${err.message})`)
      throw err
    }
  }
  let finished = false
  for await (const data of datas()) {
    const event = interpretData(data)
    if (event.done) return
    if (event.finished) finished = true
    if (event.text !== null) yield event.text
  }
  // Without [DONE] or a finish_reason the text may be cut short: say so rather than pass it as whole.
  if (!finished) throw new UpstreamError('model server stream ended before [DONE]')
}

export function createOpenAiUpstream (options: OpenAiUpstreamOptions): Upstream {
  const url = `${options.baseUrl}/v1/chat/completions`
  const doFetch = options.fetch ?? globalThis.fetch
  const { clock } = options

  function redact (text: string): string {
    const key = options.apiKey
    return key !== undefined && key.length >= 4 ? text.split(key).join('[redacted]') : text
  }

  async function * stream (input: UpstreamInput, signal: AbortSignal): AsyncGenerator<string, void, undefined> {
    signal.throwIfAborted()
    // One controller for the whole exchange, fed by the caller's signal and our own timeout.
    const controller = new AbortController()
    const forward = (): void => { controller.abort(signal.reason) }
    signal.addEventListener('abort', forward, { once: true })
    let timedOut = false
    const timer = clock.setTimeout(() => { timedOut = true; controller.abort() }, options.connectTimeoutMs)
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' }
    if (options.apiKey !== undefined) headers.authorization = `Bearer ${options.apiKey}`
    const body = JSON.stringify({ model: options.model, stream: true, messages: buildMessages(options.systemPrompt, input) })
    try {
      let response: Response
      try {
        response = await doFetch(url, { method: 'POST', headers, body, signal: controller.signal })
      } catch (err) {
        if (signal.aborted) throw err
        if (timedOut) throw new UpstreamError(`model server did not answer within ${options.connectTimeoutMs} ms`)
        throw new UpstreamError(`model server unreachable (${networkReason(err)})`)
      } finally {
        clock.clearTimeout(timer)
      }
      try {
        if (!response.ok) {
          const detail = await readDetail(response)
          throw new UpstreamError(`model server returned ${response.status}${detail === null ? '' : `: ${redact(detail)}`}`)
        }
        if (response.body === null) throw new UpstreamError('model server sent an empty body')
        const type = response.headers.get('content-type') ?? ''
        if (/^application\/json\b/i.test(type)) {
          // The server ignored `stream: true` and sent one chat.completion: relay it as one delta.
          const text = await readWhole(response, MAX_JSON_BODY_BYTES)
          yield wholeCompletion(text)
          return
        }
        yield * streamDeltas(response.body)
      } catch (err) {
        if (signal.aborted || err instanceof UpstreamError) throw err
        throw new UpstreamError(`model server stream broke (${networkReason(err)})`)
      }
    } finally {
      signal.removeEventListener('abort', forward)
      clock.clearTimeout(timer)
      // Releases the connection when the consumer stopped early; a no-op after a full read.
      controller.abort()
    }
  }

  return { stream }
}

function wholeCompletion (text: string): string {
  let value: any
  try { value = JSON.parse(text) } catch { throw new UpstreamError('model server sent malformed JSON') }
  if (value?.error !== undefined) throw new UpstreamError(`model server error: ${errorText(value.error) ?? 'unspecified'}`)
  const content = value?.choices?.[0]?.message?.content
  if (typeof content !== 'string') throw new UpstreamError('model server sent a completion without text')
  return content
}

/** The `message` of an OpenAI-style error object (or the error itself when it is a string). */
function errorText (error: unknown): string | null {
  const raw = typeof error === 'string' ? error : (error as { message?: unknown } | null)?.message
  return typeof raw === 'string' ? tidy(raw) : null
}

function tidy (text: string): string {
  // One line, printable, short: it ends up in an HTTP error body and in logs.
  const line = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').replace(/\s+/g, ' ').trim()
  return line.length > MAX_DETAIL_CHARS ? `${line.slice(0, MAX_DETAIL_CHARS)}…` : line
}

async function readDetail (response: Response): Promise<string | null> {
  let text: string
  try { text = await readWhole(response, MAX_ERROR_BODY_BYTES, true) } catch { return null }
  if (text.trim() === '') return null
  try {
    const parsed = JSON.parse(text) as { error?: unknown, message?: unknown, detail?: unknown }
    const message = errorText(parsed.error ?? parsed) ?? (typeof parsed.detail === 'string' ? tidy(parsed.detail) : null)
    if (message !== null && message !== '') return message
  } catch {
    // not JSON: quote the text itself
  }
  const line = tidy(text)
  return line === '' ? null : line
}

/** Reads a body up to `limit` bytes; beyond it, throws (or, with `truncate`, keeps the start). */
async function readWhole (response: Response, limit: number, truncate = false): Promise<string> {
  if (response.body === null) return ''
  const parts: Uint8Array[] = []
  let size = 0
  for await (const bytes of response.body) {
    parts.push(bytes)
    size += bytes.byteLength
    if (size > limit) {
      if (truncate) break
      throw new UpstreamError(`model server answer larger than ${limit} bytes`)
    }
  }
  return Buffer.concat(parts).subarray(0, limit).toString('utf8')
}

/** A short reason for a fetch failure: undici puts the system error (ECONNREFUSED, ...) in `cause`. */
function networkReason (err: unknown): string {
  const cause = (err as { cause?: { code?: unknown, message?: unknown } } | null)?.cause
  if (typeof cause?.code === 'string') return cause.code
  if (typeof cause?.message === 'string') return tidy(cause.message)
  return err instanceof Error ? tidy(err.message) : 'unknown error'
}
