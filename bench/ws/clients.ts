/**
 * The socket-client processes of bench:ws (bench/ws-client.ts), seen from the orchestrator:
 * forked with structured-clone IPC, each dealt whole sessions round-robin, and asked one command
 * at a time (bench/ws/protocol.ts).
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { forkNode, nextMessage, type Started } from '../lib/proc.js'
import type { ClientCommand, ClientMessage, SessionRef } from './protocol.js'

/** Bound on a client's answer to one command (opening 10,000 sockets included). */
const ANSWER_TIMEOUT_MS = 120_000

export interface Client { readonly proc: Started, readonly pid: number, readonly sessions: SessionRef[], readonly epochMinusMono: number }

/**
 * Forks `count` clients that live at most `maxLifeMs`; each times hints on the monotonic clock
 * plus `epochBase` (this process's, as the publisher does) and holds the sessions whose index
 * is its own modulo `count`.
 */
export async function startClients (o: { count: number, sessionIds: readonly string[], maxLifeMs: number, epochBase: number, logDir: string }): Promise<Client[]> {
  const clientJs = fileURLToPath(new URL('../ws-client.js', import.meta.url))
  return await Promise.all(Array.from({ length: o.count }, async (_, k) => {
    const proc = forkNode(clientJs, [String(o.maxLifeMs), String(o.epochBase)], join(o.logDir, `ws-client-${k}.log`), { serialization: 'advanced' })
    const hello = await nextMessage(proc.child, (m): m is ClientMessage => (m as ClientMessage).type === 'hello', 10_000, `ws-client ${k} start`)
    if (hello.type !== 'hello') throw new Error('ws-client: no hello')
    const sessions = o.sessionIds.map((id, index) => ({ index, id })).filter((x) => x.index % o.count === k)
    return { proc, pid: hello.pid, sessions, epochMinusMono: hello.epoch_minus_mono_ms }
  }))
}

/** Sends `cmd` and waits for the answer of type `want`; an `error` answer rejects. */
export async function ask<T extends ClientMessage['type']> (c: Client, cmd: ClientCommand, want: T, timeoutMs = ANSWER_TIMEOUT_MS): Promise<Extract<ClientMessage, { type: T }>> {
  const answer = nextMessage(c.proc.child, (m): m is ClientMessage => typeof m === 'object' && m !== null && ((m as ClientMessage).type === want || (m as ClientMessage).type === 'error'),
    timeoutMs, `ws-client ${c.pid} (${cmd.cmd})`)
  c.proc.child.send(cmd)
  const m = await answer
  if (m.type === 'error') throw new Error(`ws-client ${c.pid}: ${m.message}\n${c.proc.tail()}`)
  return m as Extract<ClientMessage, { type: T }>
}
