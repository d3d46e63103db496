/**
 * Opens many WebSockets (the `ws` package) with a bounded number of handshakes in flight, each
 * with its own deadline, and tallies the refusals. No retries: a socket that fails to open is
 * a finding, not something to paper over.
 */
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { Tally } from '../lib/stats.js'

export interface OpenSpec {
  readonly url: string
  /** Called before the handshake starts, so no frame that follows the 101 can be missed. */
  readonly attach: (ws: WebSocket) => void
}

export interface OpenOutcome {
  readonly sockets: Array<WebSocket | undefined>
  readonly opened: number
  readonly failed: Tally
  readonly elapsedMs: number
  readonly openMs: Float64Array
}

export const CLIENT_OPTIONS: WebSocket.ClientOptions = {
  // uWebSockets.js runs without compression here; not offering it keeps the handshake honest.
  perMessageDeflate: false,
  // The bench's frames are ASCII JSON from our own server; validating UTF-8 on 50,000+ frames
  // a second would spend the client's CPU on something the measurement does not need.
  skipUTF8Validation: true,
  maxPayload: 1 << 20
}

async function openOne (spec: OpenSpec, timeoutMs: number, failed: Tally): Promise<WebSocket | undefined> {
  return await new Promise((resolve) => {
    const ws = new WebSocket(spec.url, { ...CLIENT_OPTIONS, handshakeTimeout: timeoutMs })
    spec.attach(ws)
    let settled = false
    const done = (value: WebSocket | undefined, why?: string): void => {
      if (settled) return
      settled = true
      if (why !== undefined) failed.add(why)
      resolve(value)
    }
    ws.once('open', () => { done(ws) })
    ws.once('unexpected-response', (_req, res) => {
      done(undefined, `http_${res.statusCode ?? '?'}`)
      res.resume()
      ws.terminate()
    })
    ws.once('error', (err: NodeJS.ErrnoException) => { done(undefined, err.code ?? err.message.slice(0, 60)) })
    ws.once('close', () => { done(undefined, 'closed_before_open') })
  })
}

/** Opens every spec, at most `concurrency` handshakes at once; resolves when all settled. */
export async function openAll (specs: readonly OpenSpec[], concurrency: number, timeoutMs: number): Promise<OpenOutcome> {
  const sockets: Array<WebSocket | undefined> = new Array(specs.length)
  const failed = new Tally()
  const openMs = new Float64Array(specs.length)
  let opened = 0
  let next = 0
  const t0 = performance.now()
  const lane = async (): Promise<void> => {
    while (next < specs.length) {
      const i = next++
      const spec = specs[i] as OpenSpec
      const start = performance.now()
      const ws = await openOne(spec, timeoutMs, failed)
      sockets[i] = ws
      if (ws !== undefined) openMs[opened++] = performance.now() - start
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, specs.length)) }, lane))
  return { sockets, opened, failed, elapsedMs: performance.now() - t0, openMs: openMs.slice(0, opened) }
}

/** Closes every open socket (1000) and waits for the close handshakes, bounded by `timeoutMs`. */
export async function closeAll (sockets: ReadonlyArray<WebSocket | undefined>, timeoutMs: number): Promise<{ closed: number, stillOpen: number }> {
  const open = sockets.filter((ws): ws is WebSocket => ws !== undefined && ws.readyState !== WebSocket.CLOSED)
  const waits = open.map(async (ws) => await new Promise<void>((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) { resolve(); return }
    ws.once('close', () => { resolve() })
    ws.close(1000, 'bench done')
  }))
  let timer: NodeJS.Timeout | undefined
  await Promise.race([Promise.all(waits), new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })])
  clearTimeout(timer)
  const stillOpen = open.filter((ws) => ws.readyState !== WebSocket.CLOSED).length
  for (const ws of open) if (ws.readyState !== WebSocket.CLOSED) ws.terminate()
  return { closed: open.length - stillOpen, stillOpen }
}
