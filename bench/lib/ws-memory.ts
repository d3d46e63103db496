/**
 * The gateway's memory at one moment: VmRSS from /proc and V8 heapUsed from its /metrics, read
 * once as they are ("raw") and once more after two full GCs forced through the inspector
 * ("after GC"), when the gateway runs with one. The difference of two after-GC readings is what
 * the sockets retain; the raw one also counts whatever garbage V8 had not collected yet.
 */
import { sleep } from './proc.js'
import { collectGarbage } from './ws-inspector.js'
import { rssBytes, seriesOf } from './ws-gateway.js'

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

/** (after - before) / n, rounded; undefined when either side is. */
export function perItem (before: number | undefined, after: number | undefined, n: number): number | undefined {
  return before === undefined || after === undefined || n <= 0 ? undefined : Math.round((after - before) / n)
}
