/**
 * What group commit did during one persistent run (src/db/group-commit.ts): the batch sizes
 * from the gateway's `tether_db_write_batch_size` histogram, scraped before and after the run,
 * and the PostgreSQL CPU each chat cost.
 */
import { scrapeText } from '../lib/metrics.js'

export interface BatchFigures {
  readonly batches: number
  readonly writes: number
  readonly mean: number
  /** Upper bounds of the histogram buckets the quantiles fall in. */
  readonly p50: number
  readonly p90: number
  readonly max_bucket: number
}

type Histogram = { buckets: Map<number, number>, count: number, sum: number }

const NAME = 'tether_db_write_batch_size'

function parse (text: string): Histogram {
  const buckets = new Map<number, number>()
  let count = 0
  let sum = 0
  for (const line of text.split('\n')) {
    const b = new RegExp(`^${NAME}_bucket\\{le="([^"]+)"\\}\\s+(\\S+)`).exec(line)
    if (b !== null) { buckets.set(b[1] === '+Inf' ? Infinity : Number(b[1]), Number(b[2])); continue }
    const c = new RegExp(`^${NAME}_count\\s+(\\S+)`).exec(line)
    if (c !== null) { count = Number(c[1]); continue }
    const s = new RegExp(`^${NAME}_sum\\s+(\\S+)`).exec(line)
    if (s !== null) sum = Number(s[1])
  }
  return { buckets, count, sum }
}

export async function batchHistogram (port: number): Promise<Histogram | undefined> {
  try { return parse(await scrapeText(port)) } catch { return undefined }
}

/** The batches between two scrapes; undefined when there were none (or a scrape failed). */
export function batchesBetween (before: Histogram | undefined, after: Histogram | undefined): BatchFigures | undefined {
  if (before === undefined || after === undefined) return undefined
  const batches = after.count - before.count
  if (batches <= 0) return undefined
  const bounds = [...after.buckets.keys()].sort((a, b) => a - b)
  const cumulative = bounds.map((le) => (after.buckets.get(le) ?? 0) - (before.buckets.get(le) ?? 0))
  const quantile = (q: number): number => bounds[cumulative.findIndex((n) => n >= q * batches)] ?? Infinity
  const writes = after.sum - before.sum
  return { batches, writes, mean: Math.round((writes / batches) * 10) / 10, p50: quantile(0.5), p90: quantile(0.9), max_bucket: quantile(1) }
}

/** PostgreSQL CPU per chat in microseconds, from its CPU % of one core over the run and the run's rate. */
export function pgMicrosPerChat (postgresCpuPercent: number | undefined, rps: number): number | undefined {
  if (postgresCpuPercent === undefined || rps <= 0) return undefined
  return Math.round((postgresCpuPercent / 100) / rps * 1e6)
}
