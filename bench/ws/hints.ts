/**
 * The hint sockets of one client process and their bookkeeping. Every delivery is counted per
 * (socket's session, seq), so delivered/expected is exact: hint `seq` of a phase belongs to
 * session `seq % sessionsTotal`, and each of that session's sockets open at the phase's start
 * must see it exactly once. Latency is receive minus the publisher's `t`, both epoch ms with
 * sub-ms precision on the same machine clock.
 */
import { monitorEventLoopDelay, performance, PerformanceObserver, type IntervalHistogram } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import type WebSocket from 'ws'
import { LatencyRecorder, Tally } from '../lib/stats.js'
import { openAll, closeAll, type OpenSpec } from './open.js'
import { epochMs, type OpenedMsg, type PhaseResultMsg, type SessionRef } from './protocol.js'

/** Per-second buckets by publish time since the phase started; later seconds share the last. */
const SECONDS = 128
/** The latency a per-second bucket counts deliveries over, ms (the p99 goal at 10,000/s). */
export const SLOW_MS = 50

interface Phase {
  readonly id: number
  readonly t0: number
  readonly secCount: Uint32Array
  readonly secMax: Float64Array
  readonly secSlow: Uint32Array
  /** Pings from the server by second of receipt: uWS pings idle sockets by itself (sendPingsAutomatically). */
  readonly secPings: Uint32Array
  readonly counts: Uint16Array
  readonly openAtStart: Uint16Array
  readonly latencies: LatencyRecorder
  readonly closes: Tally
  received: number
  stray: number
  misrouted: number
  p2gSum: number
  g2cSum: number
  readonly elu0: ReturnType<typeof performance.eventLoopUtilization>
  readonly loopDelay: IntervalHistogram
  gcMaxMs: number
  gcTotalMs: number
}

/** Sampling interval of the client's own loop-delay histogram; Node counts it in every value. */
const LOOP_RESOLUTION_MS = 10

export interface HintClient {
  open: (o: { port: number, token: string, sessions: SessionRef[], sessionsTotal: number, perSession: number, concurrency: number, timeoutMs: number }) => Promise<OpenedMsg>
  startPhase: (id: number, maxSeq: number) => void
  collect: (id: number, published: number, drainMs: number) => Promise<PhaseResultMsg>
  close: (timeoutMs: number) => Promise<{ closed: number, stillOpen: number }>
  readonly openCount: number
}

export function createHintClient (): HintClient {
  let sockets: Array<WebSocket | undefined> = []
  let sessionsTotal = 1
  /** Open sockets per session index; non-zero only for this process's sessions. */
  let openPer = new Uint16Array(1)
  let openCount = 0
  let phase: Phase | undefined
  /** Closes and stray hints outside any phase (opening, between phases): told with the next phase. */
  let idleCloses = new Tally()
  let strayOutside = 0
  // This client's GC pauses, per phase: a stalled client must not pass for a slow gateway.
  const gcObserver = new PerformanceObserver((list) => {
    const p = phase
    if (p === undefined) return
    for (const e of list.getEntries()) {
      p.gcTotalMs += e.duration
      if (e.duration > p.gcMaxMs) p.gcMaxMs = e.duration
    }
  })
  gcObserver.observe({ entryTypes: ['gc'] })

  function onHint (sessionIndex: number, sessionId: string, raw: WebSocket.RawData): void {
    const now = epochMs()
    const p = phase
    let frame: { type?: unknown, session_id?: unknown, ts?: unknown, data?: { p?: unknown, seq?: unknown, t?: unknown } }
    try { frame = JSON.parse(raw.toString()) } catch { if (p !== undefined) p.stray++; else strayOutside++; return }
    const d = frame.data
    if (p === undefined || frame.type !== 'hint' || typeof d !== 'object' || d === null || d.p !== p.id ||
        typeof d.seq !== 'number' || typeof d.t !== 'number' || d.seq < 0 || d.seq >= p.counts.length) {
      if (p !== undefined) p.stray++; else strayOutside++
      return
    }
    if (frame.session_id !== sessionId || d.seq % sessionsTotal !== sessionIndex) { p.misrouted++; return }
    p.counts[d.seq] = (p.counts[d.seq] ?? 0) + 1
    p.received++
    const ms = now - d.t
    p.latencies.add(ms)
    const sec = Math.min(SECONDS - 1, Math.max(0, Math.floor((d.t - p.t0) / 1000)))
    p.secCount[sec] = (p.secCount[sec] ?? 0) + 1
    if (ms > (p.secMax[sec] ?? 0)) p.secMax[sec] = ms
    if (ms > SLOW_MS) p.secSlow[sec] = (p.secSlow[sec] ?? 0) + 1
    if (typeof frame.ts === 'number') {
      p.p2gSum += frame.ts - d.t
      p.g2cSum += now - frame.ts
    }
  }

  function attach (ws: WebSocket, ref: SessionRef): void {
    let isOpen = false
    ws.on('error', () => { /* reported through 'close' or the open outcome */ })
    ws.on('open', () => { isOpen = true; openPer[ref.index] = (openPer[ref.index] ?? 0) + 1; openCount++ })
    ws.on('message', (raw) => { onHint(ref.index, ref.id, raw) })
    ws.on('ping', () => {
      const p = phase
      if (p === undefined) return
      const sec = Math.min(SECONDS - 1, Math.max(0, Math.floor((epochMs() - p.t0) / 1000)))
      p.secPings[sec] = (p.secPings[sec] ?? 0) + 1
    })
    ws.on('close', (code) => {
      if (!isOpen) return
      isOpen = false
      openPer[ref.index] = (openPer[ref.index] ?? 1) - 1
      openCount--
      ;(phase?.closes ?? idleCloses).add(code)
    })
  }

  return {
    get openCount () { return openCount },
    async open (o) {
      sessionsTotal = o.sessionsTotal
      openPer = new Uint16Array(o.sessionsTotal)
      const specs: OpenSpec[] = []
      // Socket k of every session before socket k+1 of any: sessions fill up evenly over time.
      for (let k = 0; k < o.perSession; k++) {
        for (const ref of o.sessions) {
          specs.push({ url: `ws://127.0.0.1:${o.port}/api/mqtt/ws/hints/${ref.id}?token=${encodeURIComponent(o.token)}`, attach: (ws) => { attach(ws, ref) } })
        }
      }
      const out = await openAll(specs, o.concurrency, o.timeoutMs)
      sockets = out.sockets
      return { type: 'opened', attempted: specs.length, opened: out.opened, failed: out.failed.counts, elapsed_ms: out.elapsedMs, open_ms: out.openMs }
    },
    startPhase (id, maxSeq) {
      const closes = new Tally()
      for (const [code, n] of Object.entries(idleCloses.counts)) closes.add(code, n)
      idleCloses = new Tally()
      phase = {
        id,
        t0: epochMs(),
        secCount: new Uint32Array(SECONDS),
        secMax: new Float64Array(SECONDS),
        secSlow: new Uint32Array(SECONDS),
        secPings: new Uint32Array(SECONDS),
        counts: new Uint16Array(maxSeq),
        openAtStart: openPer.slice(),
        latencies: new LatencyRecorder(),
        closes,
        received: 0,
        stray: strayOutside,
        misrouted: 0,
        p2gSum: 0,
        g2cSum: 0,
        elu0: performance.eventLoopUtilization(),
        loopDelay: monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS }),
        gcMaxMs: 0,
        gcTotalMs: 0
      }
      phase.loopDelay.enable()
      strayOutside = 0
    },
    async collect (id, published, drainMs) {
      const p = phase
      if (p === undefined || p.id !== id) throw new Error(`collect for phase ${id}, but phase ${p?.id ?? 'none'} is running`)
      const n = Math.min(published, p.counts.length)
      let expected = 0
      for (let seq = 0; seq < n; seq++) expected += p.openAtStart[seq % sessionsTotal] ?? 0
      // Late deliveries are still on their way: wait until all arrived, bounded by drainMs.
      const end = performance.now() + drainMs
      while (p.received < expected && performance.now() < end) await sleep(20)
      let delivered = 0
      let missing = 0
      let duplicates = 0
      for (let seq = 0; seq < n; seq++) {
        const want = p.openAtStart[seq % sessionsTotal] ?? 0
        const got = p.counts[seq] ?? 0
        delivered += Math.min(got, want)
        if (got < want) missing += want - got
        else duplicates += got - want
      }
      const elu = performance.eventLoopUtilization(p.elu0).utilization
      p.loopDelay.disable()
      const loopDelayMaxMs = Math.max(0, p.loopDelay.max / 1e6 - LOOP_RESOLUTION_MS)
      // From here on a hint of this phase is late: it shows up as stray in the next one.
      phase = undefined
      const count = p.latencies.count
      return {
        type: 'phase-result',
        phase: id,
        expected,
        delivered,
        missing,
        duplicates,
        stray: p.stray,
        misrouted: p.misrouted,
        latencies: p.latencies.take(),
        started_epoch_ms: p.t0,
        per_second: { count: p.secCount, max_ms: p.secMax, slow: p.secSlow, pings: p.secPings },
        publish_to_gateway_mean_ms: count === 0 ? 0 : p.p2gSum / count,
        gateway_to_client_mean_ms: count === 0 ? 0 : p.g2cSum / count,
        elu,
        loop_delay_max_ms: loopDelayMaxMs,
        gc_max_ms: p.gcMaxMs,
        gc_total_ms: p.gcTotalMs,
        closes: p.closes.counts,
        open_sockets: openCount
      }
    },
    async close (timeoutMs) {
      phase = undefined
      gcObserver.disconnect()
      return await closeAll(sockets, timeoutMs)
    }
  }
}
