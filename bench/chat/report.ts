/** The bench:chat report: its rows, the goals of docs/benchmarks.md ("bench:chat") and the markdown. */
import type { Goal, RunReport } from '../lib/results.js'
import type { RunResult } from './load-runner.js'
import type { HeapResult } from './heap-phase.js'
import { pgMicrosPerChat, type BatchFigures } from './write-batches.js'

/** One concurrency level: the same closed-loop load against each path, in this order. */
export interface Row {
  readonly concurrency: number
  /** Broker + echo worker over one MQTT connection: the most any gateway could do. */
  readonly ceiling?: RunResult
  /** Gateway with CHAT_MODE=relay: no token, nothing stored. */
  readonly relay?: RunResult
  /** Gateway with CHAT_MODE=persistent: Bearer token, owned session, both turns stored. */
  readonly persistent?: RunResult
  /** The persistent path's two statements alone, through the gateway's own pool and store. */
  readonly pg?: RunResult
  /** Group commit during the persistent run: batch sizes. */
  readonly batches?: BatchFigures
}

export interface Report extends RunReport {
  readonly rows: Row[]
  heap?: HeapResult
}

function over (a: RunResult | undefined, b: RunResult | undefined): number | undefined {
  if (a === undefined || b === undefined || b.rps === 0) return undefined
  return a.rps / b.rps
}

/** 1 - persistent/relay: the share of relay throughput that authentication and storage take. */
export function persistenceCost (row: Row | undefined): number | undefined {
  const q = over(row?.persistent, row?.relay)
  return q === undefined ? undefined : 1 - q
}

export function goals (r: Report): Goal[] {
  const at = (c: number): Row | undefined => r.rows.find((x) => x.concurrency === c)
  const out: Goal[] = []
  const check = (goal: string, target: string, value: number | undefined, pass: (v: number) => boolean, fmt: (v: number) => string): void => {
    out.push({ goal, target, measured: value === undefined ? 'n/a' : fmt(value), pass: value === undefined ? undefined : pass(value) })
  }
  check('gateway (relay) / ceiling at c=64', '>= 0.50', over(at(64)?.relay, at(64)?.ceiling), (v) => v >= 0.5, (v) => v.toFixed(2))
  check('gateway (relay) / ceiling at c=256', '>= 0.60', over(at(256)?.relay, at(256)?.ceiling), (v) => v >= 0.6, (v) => v.toFixed(2))
  check('gateway (relay) p99 at c=64', '< 30 ms', at(64)?.relay?.latency.p99_ms, (v) => v < 30, (v) => `${v.toFixed(2)} ms`)
  check('gateway (relay) p50 at c=1', '< 1 ms', at(1)?.relay?.latency.p50_ms, (v) => v < 1, (v) => `${v.toFixed(3)} ms`)
  check('persistence cost at c=64 (1 - persistent/relay req/s)', '< 30%', persistenceCost(at(64)), (v) => v < 0.3, pct)
  check('heap per pending request', '< 4096 B', r.heap?.heap_per_pending_bytes, (v) => v < 4096, (v) => `${v} B`)
  return out
}

const PG_CEILING = 'PostgreSQL ceiling (2 statements)'
const pct = (v: number): string => `${(v * 100).toFixed(1)}%`
const fmtN = (n: number | undefined): string => n === undefined ? '-' : n.toLocaleString('en-US')
const fmtMs = (n: number | undefined): string => n === undefined ? '-' : n.toFixed(n < 10 ? 3 : 1)
const fmtQ = (q: number | undefined): string => q === undefined ? '-' : q.toFixed(2)

function errs (x: RunResult | undefined): string {
  if (x === undefined) return '-'
  const parts = Object.entries(x.statuses).filter(([k]) => k !== '200' && k !== 'ok').map(([k, v]) => `${k}:${v}`)
  for (const [k, v] of Object.entries(x.errors)) parts.push(`${k}:${v}`)
  if (x.unfinished > 0) parts.push(`unfinished:${x.unfinished}`)
  return parts.length === 0 ? '0' : parts.join(' ')
}

function cpu (x: RunResult | undefined): string {
  if (x === undefined) return '-'
  const c = x.cpu_percent
  const names = ['gateway', 'postgres', 'broker', 'worker', 'loadgen'].filter((n) => c[n] !== undefined)
  return names.map((n) => `${n} ${c[n]}`).join(', ')
}

export function markdown (r: Report): string {
  const m = r.machine
  const lines: string[] = []
  lines.push(`### bench:chat — ${r.started_at}`, '')
  lines.push(`Command: \`${r.command}\``, '')
  lines.push(`Machine: ${m.cpus} x ${m.cpu_model}, ${m.total_mem_mb} MB, ${m.os}; Node ${m.node}; Mosquitto ${m.mosquitto}; ` +
    `PostgreSQL ${String(r.settings.postgres_version ?? '-')}${pgSettings(r.settings.postgres_settings)}; ulimit -n ${m.ulimit_nofile ?? '?'}; load average ${m.loadavg_1m_at_start} at start${r.settings.loadavg_1m_at_end === undefined ? '' : `, ${String(r.settings.loadavg_1m_at_end)} at end`}` +
    `${m.git_commit !== undefined ? `; commit ${m.git_commit}${m.git_dirty === true ? ' plus uncommitted changes to the gateway' : ''}` : ''}`, '')
  lines.push(`Each run: ${String(r.settings.warmup_s)} s warm-up + ${String(r.settings.measure_s)} s measured, closed loop, ` +
    `${String(r.settings.sessions)} sessions, echo worker with ${String(r.settings.echo_chunks)} chunks, DB_POOL_SIZE ${String(r.settings.db_pool_size ?? '-')}; ` +
    'relay = gateway with CHAT_MODE=relay (no token, nothing stored), persistent = CHAT_MODE=persistent on PostgreSQL (Bearer token, owned session, both turns stored).', '')
  const loadRows = r.rows.filter((row) => row.ceiling !== undefined || row.relay !== undefined || row.persistent !== undefined || row.pg !== undefined)
  if (loadRows.length > 0) {
    lines.push('| concurrency | path | req/s | p50 ms | p99 ms | / ceiling | / relay | errors | CPU % of one core |')
    lines.push('|---:|---|---:|---:|---:|---:|---:|---|---|')
    for (const row of loadRows) {
      const paths: Array<[string, RunResult | undefined]> = [['MQTT ceiling', row.ceiling], ['relay', row.relay], ['persistent', row.persistent], [PG_CEILING, row.pg]]
      for (const [name, x] of paths) {
        if (x === undefined) continue
        const vsCeiling = name === 'relay' || name === 'persistent' ? fmtQ(over(x, row.ceiling)) : '-'
        const vsRelay = name === 'persistent' ? fmtQ(over(x, row.relay)) : '-'
        lines.push(`| ${row.concurrency} | ${name} | ${fmtN(x.rps)} | ${fmtMs(x.latency.p50_ms)} | ${fmtMs(x.latency.p99_ms)} | ` +
          `${vsCeiling} | ${vsRelay} | ${errs(x)} | ${cpu(x)} |`)
      }
    }
    lines.push('')
    const costRows = loadRows.filter((row) => row.relay !== undefined && row.persistent !== undefined)
    if (costRows.length > 0) {
      lines.push('| concurrency | relay req/s | persistent req/s | persistent / relay | persistence cost | PostgreSQL ceiling chats/s | persistent / PostgreSQL ceiling |',
        '|---:|---:|---:|---:|---:|---:|---:|')
      for (const row of costRows) {
        const cost = persistenceCost(row)
        lines.push(`| ${row.concurrency} | ${fmtN(row.relay?.rps)} | ${fmtN(row.persistent?.rps)} | ${fmtQ(over(row.persistent, row.relay))} | ` +
          `${cost === undefined ? '-' : pct(cost)} | ${fmtN(row.pg?.rps)} | ${fmtQ(over(row.persistent, row.pg))} |`)
      }
      lines.push('')
    }
    const batchRows = loadRows.filter((row) => row.persistent !== undefined)
    if (batchRows.length > 0) {
      lines.push('| concurrency | persistent req/s | write batches | writes per batch: mean | p50 | p90 | largest (bucket) | PostgreSQL CPU per chat |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|')
      for (const row of batchRows) {
        const b = row.batches
        const us = pgMicrosPerChat(row.persistent?.cpu_percent.postgres, row.persistent?.rps ?? 0)
        lines.push(`| ${row.concurrency} | ${fmtN(row.persistent?.rps)} | ${b === undefined ? '-' : fmtN(b.batches)} | ${b?.mean ?? '-'} | ` +
          `${b === undefined ? '-' : `<= ${b.p50}`} | ${b === undefined ? '-' : `<= ${b.p90}`} | ${b === undefined ? '-' : `<= ${b.max_bucket}`} | ${us === undefined ? '-' : `${us} µs`} |`)
      }
      lines.push('')
    }
  }
  if (r.heap !== undefined) {
    const h = r.heap
    lines.push(`Heap per pending request: **${h.heap_per_pending_bytes} B** of V8 heap (${h.pending.toLocaleString('en-US')} pending per ${h.pending_source}; ` +
      `heapUsed ${mb(h.baseline.heapUsed)} -> ${mb(h.loaded.heapUsed)} MB; RSS ${h.rss_per_pending_bytes} B/request, external ${h.external_per_pending_bytes} B/request; ` +
      `pending after the clients aborted: ${h.pending_after_abort ?? 'unknown'} (waited up to 10 s for 0)).`, '')
  }
  lines.push('| goal | target | measured | result |', '|---|---|---|---|')
  for (const g of goals(r)) lines.push(`| ${g.goal} | ${g.target} | ${g.measured} | ${g.pass === undefined ? 'not measured' : g.pass ? 'PASS' : 'FAIL'} |`)
  if (r.failures.length > 0) {
    lines.push('', 'Failures:')
    for (const f of r.failures) lines.push(`- ${summarize(f)}`)
  }
  return lines.join('\n')
}

/** " (fsync on, synchronous_commit on, ...)" from the server settings the run recorded. */
function pgSettings (settings: unknown): string {
  if (typeof settings !== 'object' || settings === null) return ''
  const parts = Object.entries(settings as Record<string, string>).map(([k, v]) => `${k} ${v}`)
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`
}

function mb (bytes: number): string { return (bytes / 2 ** 20).toFixed(1) }

/** First line of a failure, plus the first line naming an error when the first does not. */
function summarize (failure: string): string {
  const lines = failure.split('\n').map((l) => l.trim()).filter((l) => l !== '')
  const first = lines[0] ?? ''
  if (/error/i.test(first)) return first
  const err = lines.find((l) => /^\w*Error\b|error:/i.test(l))
  return err === undefined ? first : `${first} ${err}`
}
