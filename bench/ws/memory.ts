/**
 * The gateway's memory at one moment: VmRSS from /proc and V8 heapUsed from its /metrics, read
 * once as they are ("raw") and once more after two full GCs forced through the inspector
 * ("after GC"), when the gateway runs with one. The difference of two after-GC readings is what
 * the sockets retain; the raw one also counts whatever garbage V8 had not collected yet.
 */
import { readFileSync } from 'node:fs'
import { seriesOf } from '../lib/metrics.js'
import { sleep } from '../lib/proc.js'
import { collectGarbage } from './inspector.js'

export interface MemoryReading {
  readonly rss_raw_bytes: number | undefined
  readonly heap_used_raw_bytes: number | undefined
  readonly rss_after_gc_bytes: number | undefined
  readonly heap_used_after_gc_bytes: number | undefined
  readonly gc_error?: string
}

const HEAP = /^nodejs_heap_size_used_bytes$/

async function heapUsed (port: number): Promise<number | undefined> {
  const v = (await seriesOf(port, HEAP)).nodejs_heap_size_used_bytes
  return typeof v === 'number' ? v : undefined
}

export async function readMemory (gw: { port: number, pid: number | undefined, inspector: string | undefined }): Promise<MemoryReading> {
  const rssRaw = rssBytes(gw.pid)
  const heapRaw = await heapUsed(gw.port)
  if (gw.inspector === undefined) {
    return { rss_raw_bytes: rssRaw, heap_used_raw_bytes: heapRaw, rss_after_gc_bytes: undefined, heap_used_after_gc_bytes: undefined }
  }
  try {
    await collectGarbage(gw.inspector, 2)
  } catch (err) {
    return { rss_raw_bytes: rssRaw, heap_used_raw_bytes: heapRaw, rss_after_gc_bytes: undefined, heap_used_after_gc_bytes: undefined, gc_error: (err as Error).message }
  }
  // V8 hands freed pages back to the OS right after the collection; a moment for it to settle.
  await sleep(500)
  return { rss_raw_bytes: rssRaw, heap_used_raw_bytes: heapRaw, rss_after_gc_bytes: rssBytes(gw.pid), heap_used_after_gc_bytes: await heapUsed(gw.port) }
}

/** VmRSS of `pid` in bytes (Linux /proc); undefined elsewhere or when the process is gone. */
export function rssBytes (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

/** (after - before) / n, rounded; undefined when either side is. */
export function perItem (before: number | undefined, after: number | undefined, n: number): number | undefined {
  return before === undefined || after === undefined || n <= 0 ? undefined : Math.round((after - before) / n)
}
