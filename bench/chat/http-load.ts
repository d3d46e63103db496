/**
 * Closed-loop HTTP load against POST /api/chatbot/messages: `concurrency` keep-alive
 * connections, each with exactly one request outstanding; a response (or failure) triggers the
 * next request on the same connection until the measured window ends. Requests rotate over
 * `sessionIds` so per-session caps stay out of the way; with a `token` every request carries
 * `Authorization: Bearer <token>` (CHAT_MODE=persistent), without one none does (relay).
 * Requests are serialised once, before the clock starts.
 *
 * Also the "hold" load for the heap phase: N connections, one request each, never read to the end.
 */
import { performance } from 'node:perf_hooks'
import { HttpConnection, classifyError, postRequest, type Response } from '../lib/http-client.js'
import { LatencyRecorder, loadResult, Tally, type LoadResult } from '../lib/stats.js'

export const CHAT_PATH = '/api/chatbot/messages'

export interface HttpLoadOptions {
  readonly host: string
  readonly port: number
  /** Several gateways: connection i goes to ports[i % n], as a load balancer's round robin would (`port` is then unused). */
  readonly ports?: readonly number[]
  readonly concurrency: number
  readonly warmupS: number
  readonly measureS: number
  readonly drainMs: number
  readonly sessionIds: readonly string[]
  /** Bearer token for CHAT_MODE=persistent; undefined sends no Authorization header. */
  readonly token?: string
  /** The substring a 200 body must contain (the echo worker's answer). */
  readonly expect: string
  /** Hard cap on requests sent, whatever the clock says. */
  readonly maxRequests: number
}

function chatRequests (host: string, port: number, sessionIds: readonly string[], token: string | undefined): Buffer[] {
  if (sessionIds.length === 0) throw new Error('no session ids to send chats on')
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
  return sessionIds.map((id) => postRequest(host, port, CHAT_PATH, JSON.stringify({ session_id: id, content: 'hello' }), true, headers))
}

/** Session ids for relay mode, which takes any well-formed id: `bench-0` ... `bench-<n-1>`. */
export function syntheticSessionIds (n: number): string[] {
  return Array.from({ length: n }, (_, k) => `bench-${k}`)
}

export async function runHttpLoad (o: HttpLoadOptions): Promise<LoadResult> {
  const ports = o.ports !== undefined && o.ports.length > 0 ? o.ports : [o.port]
  const requestsByPort = ports.map((p) => chatRequests(o.host, p, o.sessionIds, o.token))
  const latencies = new LatencyRecorder()
  const statuses = new Tally()
  const errors = new Tally()
  const conns: HttpConnection[] = []
  let seq = 0
  let outstanding = 0
  const t0 = performance.now()
  const warmEnd = t0 + o.warmupS * 1000
  const measEnd = warmEnd + o.measureS * 1000
  let onDrained: (() => void) | undefined

  const loop = (conn: HttpConnection, requests: Buffer[]): void => {
    const req = requests[seq++ % requests.length] as Buffer
    const started = performance.now()
    outstanding++
    conn.send(req, (err: Error | undefined, res: Response | undefined) => {
      outstanding--
      const now = performance.now()
      const inWindow = now >= warmEnd && now < measEnd
      if (err !== undefined || res === undefined) {
        if (inWindow) errors.add(classifyError(err))
      } else if (inWindow) {
        latencies.add(now - started)
        statuses.add(res.status)
        if (res.status === 200 && !res.body.includes(o.expect)) errors.add('bad_body')
      }
      if (now < measEnd && !conn.closed && seq < o.maxRequests) {
        // After a transport error wait a little so a dead server is not hammered in a hot loop.
        if (err !== undefined) setTimeout(() => { if (performance.now() < measEnd) loop(conn, requests) }, 50)
        else loop(conn, requests)
      } else if (outstanding === 0) {
        onDrained?.()
      }
    })
  }

  for (let i = 0; i < o.concurrency; i++) {
    const k = i % ports.length
    const c = new HttpConnection(o.host, ports[k] as number)
    conns.push(c)
    loop(c, requestsByPort[k] as Buffer[])
  }
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, measEnd - performance.now())))
  if (outstanding > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.drainMs)
      onDrained = () => { clearTimeout(timer); resolve() }
    })
  }
  const unfinished = outstanding
  for (const c of conns) c.destroy()

  return loadResult('http', o, { latencies, statuses, errors, unfinished, ok: statuses.counts['200'] ?? 0 })
}

export interface HoldOptions {
  readonly host: string
  readonly port: number
  readonly count: number
  readonly sessionIds: readonly string[]
  /** Connections opened at once; keeps the listen backlog (somaxconn) from overflowing. */
  readonly batch: number
}

export interface Hold {
  readonly sent: number
  /** Answers that came back although the worker is silent (429, 503...): each is a request not held. */
  readonly early: Tally
  readonly failures: Tally
  abort: () => void
}

/** Opens `count` connections with one chat request each and leaves them waiting. */
export async function holdRequests (o: HoldOptions): Promise<Hold> {
  const requests = chatRequests(o.host, o.port, o.sessionIds, undefined)
  const early = new Tally()
  const failures = new Tally()
  const conns: HttpConnection[] = []
  let aborted = false
  let sent = 0
  for (let i = 0; i < o.count && !aborted; i += o.batch) {
    const n = Math.min(o.batch, o.count - i)
    const writes: Array<Promise<void>> = []
    for (let j = 0; j < n; j++) {
      const c = new HttpConnection(o.host, o.port)
      conns.push(c)
      writes.push(new Promise<void>((resolve) => {
        c.send(requests[(i + j) % requests.length] as Buffer, (err, res) => {
          if (aborted) return
          if (err !== undefined) failures.add(classifyError(err))
          else if (res !== undefined) early.add(res.status)
        })
        // Written means handed to the kernel; the socket connects within the batch.
        c.connected().then(resolve, resolve)
      }))
      sent++
    }
    await Promise.all(writes)
  }
  return {
    sent,
    early,
    failures,
    abort: () => { aborted = true; for (const c of conns) c.destroy() }
  }
}
