/**
 * Open-loop HTTP load for bench:loop: requests leave on a fixed schedule (`ratePerS`), whatever
 * the server does, so a stalled gateway cannot slow its own load down and hide the stall
 * (coordinated omission). Each request goes out on an idle keep-alive connection, or a new
 * one; when `maxOutstanding` requests are already waiting, the due request is not sent and is
 * counted as `skipped`, which bounds what a stalled server can pile up.
 *
 * Windows: a request belongs to the measured window when it was *sent* in it, and its latency
 * counts however late it comes back (up to `timeoutMs`, then it is a timeout); throughput is
 * the answers with the expected status *received* in the window.
 */
import { performance } from 'node:perf_hooks'
import { HttpConnection, classifyError, type Response } from '../lib/http-client.js'
import { LatencyRecorder, Tally, round3, type LatencySummary } from '../lib/stats.js'

export interface StreamOptions {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly ratePerS: number
  /** Pre-serialised requests, used in turn. */
  readonly requests: readonly Buffer[]
  /** The status that counts as success. */
  readonly okStatus: number
  /** A success's body must contain this (e.g. `"token"`, `echo:`). */
  readonly expect: string
  readonly maxOutstanding: number
  /** A request unanswered this long is abandoned (its connection closed) and counted as `timeout`. */
  readonly timeoutMs: number
  /** Called with each success's body in the window (the health prober reads the lag from it). */
  readonly onBody?: (body: Buffer) => void
}

export interface Window {
  /** performance.now() of the window's start and end in this process. */
  readonly startMs: number
  readonly endMs: number
}

export interface StreamResult {
  readonly name: string
  readonly target_per_s: number
  readonly window_s: number
  /** Requests sent in the window. */
  readonly sent: number
  /** Requests due in the window but not sent: `maxOutstanding` were already waiting. */
  readonly skipped: number
  /** Successes received in the window, per second. */
  readonly achieved_per_s: number
  /** Latency of the window's requests that got an answer (any status). */
  readonly latency: LatencySummary
  /** Latency of the window's successes only. */
  readonly ok_latency: LatencySummary
  /** Answers in the window by status; an error status also names its code (`503 overloaded`). */
  readonly statuses: Record<string, number>
  readonly errors: Record<string, number>
  /** Window requests still unanswered when the stream stopped. */
  readonly unfinished: number
  /** How late this process's own scheduler sent requests (its own loop, not the server's): p99 and max, ms. */
  readonly send_lag_p99_ms: number
  readonly send_lag_max_ms: number
  readonly max_connections: number
}

interface Pending {
  readonly conn: HttpConnection
  readonly sentAt: number
  readonly inWindow: boolean
  readonly timer: NodeJS.Timeout
}

/**
 * Runs one stream until `window.endMs`, then waits (at most `timeoutMs`) for the window's
 * requests and closes every connection.
 */
export async function runStream (o: StreamOptions, window: Window): Promise<StreamResult> {
  if (o.requests.length === 0) throw new Error(`${o.name}: no requests to send`)
  const intervalMs = 1000 / o.ratePerS
  const latency = new LatencyRecorder()
  const okLatency = new LatencyRecorder()
  const sendLag = new LatencyRecorder()
  const statuses = new Tally()
  const errors = new Tally()
  const idle: HttpConnection[] = []
  const pending = new Set<Pending>()
  let connections = 0
  let maxConnections = 0
  let sent = 0
  let skipped = 0
  let ok = 0
  let seq = 0
  let windowPending = 0
  let onWindowDrained: (() => void) | undefined

  const t0 = performance.now()
  let next = t0

  function settle (p: Pending, err: Error | undefined, res: Response | undefined): void {
    if (!pending.delete(p)) return
    clearTimeout(p.timer)
    const now = performance.now()
    if (err === undefined && res !== undefined) {
      idle.push(p.conn)
      const good = res.status === o.okStatus && res.body.includes(o.expect)
      if (now >= window.startMs && now < window.endMs && good) ok++
      if (p.inWindow) {
        latency.add(now - p.sentAt)
        statuses.add(good || res.status === o.okStatus ? res.status : `${res.status} ${errorCode(res.body)}`)
        if (good) {
          okLatency.add(now - p.sentAt)
          o.onBody?.(res.body)
        } else if (res.status === o.okStatus) {
          errors.add('bad_body')
        }
      }
    } else {
      p.conn.destroy()
      connections--
      if (p.inWindow) errors.add(err?.message === 'timeout' ? 'timeout' : classifyError(err))
    }
    if (p.inWindow && --windowPending === 0) onWindowDrained?.()
  }

  function sendOne (dueAt: number): void {
    const now = performance.now()
    const inWindow = dueAt >= window.startMs && dueAt < window.endMs
    if (pending.size >= o.maxOutstanding) {
      if (inWindow) skipped++
      return
    }
    let conn = idle.pop()
    if (conn === undefined) {
      conn = new HttpConnection(o.host, o.port)
      connections++
      maxConnections = Math.max(maxConnections, connections)
    }
    const request = o.requests[seq++ % o.requests.length] as Buffer
    const p: Pending = {
      conn,
      sentAt: now,
      inWindow,
      timer: setTimeout(() => { settle(p, new Error('timeout'), undefined) }, o.timeoutMs)
    }
    pending.add(p)
    if (inWindow) {
      sent++
      windowPending++
      sendLag.add(now - dueAt)
    }
    conn.send(request, (err, res) => { settle(p, err, res) })
  }

  // Every ms at most: sends whatever the schedule says is due, so a late tick catches up and the
  // rate holds. Bounded by the window's end.
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now()
      while (next <= now && next < window.endMs) {
        sendOne(next)
        next += intervalMs
      }
      if (next >= window.endMs) { resolve(); return }
      setTimeout(tick, Math.max(0, Math.min(intervalMs, next - performance.now())))
    }
    tick()
  })
  if (windowPending > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.timeoutMs + 1000)
      onWindowDrained = () => { clearTimeout(timer); resolve() }
    })
  }
  const unfinished = windowPending
  for (const p of pending) { clearTimeout(p.timer); p.conn.destroy() }
  pending.clear()
  for (const c of idle) c.destroy()

  const windowS = (window.endMs - window.startMs) / 1000
  const lag = sendLag.summary()
  return {
    name: o.name,
    target_per_s: o.ratePerS,
    window_s: round3(windowS),
    sent,
    skipped,
    achieved_per_s: round3(ok / windowS),
    latency: latency.summary(),
    ok_latency: okLatency.summary(),
    statuses: statuses.counts,
    errors: errors.counts,
    unfinished,
    send_lag_p99_ms: lag.p99_ms,
    send_lag_max_ms: lag.max_ms,
    max_connections: maxConnections
  }
}

/**
 * The `error` code of an error body (docs/errors.md), so a 503 says whether it was `overloaded`
 * or `db_unavailable`; for /api/health, its `status` (`unhealthy`).
 */
function errorCode (body: Buffer): string {
  try {
    const json = JSON.parse(body.toString('utf8')) as { error?: unknown, status?: unknown }
    const code = json.error ?? json.status
    return typeof code === 'string' ? code : '?'
  } catch {
    return '?'
  }
}
