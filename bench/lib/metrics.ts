/**
 * Reading a running gateway over HTTP from outside: Prometheus text from GET /metrics, folded
 * by metric name or kept per series (labels and all), for every family's report.
 */

/** GET `path` as text; throws on a status other than 200 or after `timeoutMs`. */
export async function getText (port: number, path: string, timeoutMs: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}`)
  return text
}

export async function scrapeText (port: number): Promise<string> {
  return await getText(port, '/metrics', 3000)
}

/** Prometheus text -> sum of the samples of each metric name (labels folded together). */
export function parseMetrics (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m === null) continue
    const value = Number(m[3])
    if (!Number.isFinite(value)) continue
    const name = m[1] as string
    out.set(name, (out.get(name) ?? 0) + value)
  }
  return out
}

/** Prometheus text -> value per series, labels kept (`name{label="v"}`), e.g. the ws_* counters by reason. */
export function parseSeries (text: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line)
    if (m?.[1] === undefined) continue
    const v = Number(m[2])
    if (Number.isFinite(v)) out[m[1]] = v
  }
  return out
}

/** Sample lines (labels kept, histogram buckets left out) whose name starts with `prefix`. */
export function samplesOf (text: string, prefix: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(prefix) && !/_bucket[{ ]/.test(l))
}

/** Reads one metric (labels folded); undefined when the scrape fails or the series does not exist. */
export async function metric (port: number, name: string): Promise<number | undefined> {
  try { return parseMetrics(await scrapeText(port)).get(name) } catch { return undefined }
}

/** The series of the names given (all label sets), or an `error` entry when the scrape fails. */
export async function seriesOf (port: number, names: RegExp): Promise<Record<string, number | string>> {
  try {
    const all = parseSeries(await scrapeText(port))
    return Object.fromEntries(Object.entries(all).filter(([k]) => names.test(k)))
  } catch (err) {
    return { error: (err as Error).message }
  }
}
