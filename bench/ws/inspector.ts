/**
 * A full garbage collection in the gateway, from outside, through the V8 inspector
 * (`node --inspect=127.0.0.1:0`, Chrome DevTools Protocol `HeapProfiler.collectGarbage`).
 * Without it, RSS per connection measures when V8 last collected: in trial runs the same 10,000
 * sockets read anywhere from -450 to +2,800 B each, depending on whether a major GC had run in
 * the idle window. The source is untouched; the inspector is idle but for these calls.
 */
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import { sleep } from '../lib/proc.js'

/** Lines the inspector itself prints on stderr; not the gateway's output. */
export const INSPECTOR_LINE = /^(Debugger (listening|ending) on ws:|For help, see: https:\/\/nodejs\.org|Debugger attached\.|Waiting for the debugger to disconnect)/

/** Waits (bounded) for "Debugger listening on ws://…" in the child's log and returns that URL. */
export async function inspectorUrl (logFile: string, timeoutMs: number): Promise<string> {
  const end = Date.now() + timeoutMs
  for (;;) {
    let text = ''
    try { text = readFileSync(logFile, 'utf8') } catch { /* not written yet */ }
    const m = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/[\w-]+)/.exec(text)
    if (m?.[1] !== undefined) return m[1]
    if (Date.now() > end) throw new Error(`no "Debugger listening on" line in ${logFile} within ${timeoutMs} ms`)
    await sleep(50)
  }
}

/** Runs `times` full GCs in the process behind `url`; rejects after `timeoutMs`. */
export async function collectGarbage (url: string, times: number, timeoutMs = 15_000): Promise<void> {
  const ws = new WebSocket(url, { perMessageDeflate: false })
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`inspector: no answer within ${timeoutMs} ms`)) }, timeoutMs)
      let next = 1
      const call = (): void => { ws.send(JSON.stringify({ id: next, method: 'HeapProfiler.collectGarbage' })) }
      ws.once('error', (err) => { clearTimeout(timer); reject(err) })
      ws.once('open', call)
      ws.on('message', (raw) => {
        const m = JSON.parse(raw.toString()) as { id?: number, error?: { message?: string } }
        if (m.id !== next) return
        if (m.error !== undefined) { clearTimeout(timer); reject(new Error(`inspector: ${m.error.message ?? 'error'}`)); return }
        if (next++ >= times) { clearTimeout(timer); resolve(); return }
        call()
      })
    })
  } finally {
    ws.terminate()
  }
}
