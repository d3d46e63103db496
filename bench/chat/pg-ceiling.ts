/**
 * The PostgreSQL ceiling: what the persistent chat path's two writes can do on this server
 * when each is its own statement, with no HTTP, MQTT or worker in the way and no group commit.
 * The gateway's own compiled modules are used (`db/pool.js`, `db/chat-writes.js`, defaults from
 * `config.js`), so the statement, the pool size and the pool discipline are the gateway's; each
 * "chat" is `beginChat` (own the session, read the history, insert the user's message) then
 * `finishChat` (insert the reply), `concurrency` of them in flight (closed loop), each through a
 * writer of its own that batches nothing (batches of one, no history cache). The gateway, which
 * groups the writes of concurrent chats, can exceed it.
 */
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { LatencyRecorder, loadResult, Tally, type LoadResult } from '../lib/stats.js'

export interface PgLoadOptions {
  /** Directory of the compiled gateway (dist/src). */
  readonly gatewayDir: string
  readonly databaseUrl: string
  /** DB_POOL_SIZE as the gateways got it; undefined: the gateway's default. */
  readonly dbPoolSize?: number
  readonly userId: string
  readonly sessionIds: readonly string[]
  readonly concurrency: number
  readonly warmupS: number
  readonly measureS: number
  readonly drainMs: number
  readonly maxRequests: number
}

interface GatewayConfig {
  readonly dbPoolSize: number
  readonly dbAcquireTimeoutMs: number
  readonly dbStatementTimeoutMs: number
  readonly dbIdleInTxTimeoutMs: number
  readonly historyMaxMessages: number
}
interface ChatWrites {
  beginChat: (userId: string, sessionId: string, content: string, historyMax: number) => Promise<unknown>
  finishChat: (sessionId: string, content: string) => Promise<unknown>
}
interface Modules {
  loadConfig: (env: Record<string, string>) => GatewayConfig
  createDbPool: (o: { url: string, size: number, acquireTimeoutMs: number, statementTimeoutMs: number, idleInTxTimeoutMs: number, prepared?: unknown }) => { db: unknown, end: () => Promise<void> }
  createChatWrites: (o: { db: unknown, maxBatch: number, maxQueue: number, historyMax: number, historyCacheMaxBytes: number }) => ChatWrites
  PREPARED_STATEMENTS: unknown
}

async function load (dir: string): Promise<Modules> {
  const imp = async (file: string): Promise<Record<string, unknown>> => await import(pathToFileURL(join(dir, file)).href) as Record<string, unknown>
  const [config, pool, store] = await Promise.all([imp('config.js'), imp('db/pool.js'), imp('db/chat-writes.js')])
  for (const [mod, name] of [[config, 'loadConfig'], [pool, 'createDbPool'], [store, 'createChatWrites']] as const) {
    if (typeof mod[name] !== 'function') throw new Error(`the gateway build in ${dir} does not export ${name}; the PostgreSQL ceiling follows src/db/`)
  }
  return { loadConfig: config.loadConfig, createDbPool: pool.createDbPool, createChatWrites: store.createChatWrites, PREPARED_STATEMENTS: store.PREPARED_STATEMENTS } as Modules
}

export interface PgRun {
  readonly result: LoadResult & { pool_size: number }
  /**
   * Ends the pool. Called only after the orchestrator has read the backends' CPU: the pool's
   * server processes exist only while it is open, and would be missed if it closed first.
   */
  close: () => Promise<void>
}

export async function runPgCeiling (o: PgLoadOptions): Promise<PgRun> {
  const m = await load(o.gatewayDir)
  // The gateway's defaults (pool size, timeouts, history length), as the persistent gateway runs them.
  const config = m.loadConfig({ DATABASE_URL: o.databaseUrl, ...(o.dbPoolSize === undefined ? {} : { DB_POOL_SIZE: String(o.dbPoolSize) }) })
  const pool = m.createDbPool({
    url: o.databaseUrl,
    size: config.dbPoolSize,
    acquireTimeoutMs: config.dbAcquireTimeoutMs,
    statementTimeoutMs: config.dbStatementTimeoutMs,
    idleInTxTimeoutMs: config.dbIdleInTxTimeoutMs,
    prepared: m.PREPARED_STATEMENTS
  })
  // One writer per chat in flight, taken from and given back to a free list: no two chats share
  // a writer, so none waits for another's statement and nothing is grouped.
  const free = Array.from({ length: o.concurrency }, () => m.createChatWrites({ db: pool.db, maxBatch: 1, maxQueue: 1, historyMax: config.historyMaxMessages, historyCacheMaxBytes: 0 }))
  const latencies = new LatencyRecorder()
  const statuses = new Tally()
  const errors = new Tally()
  let seq = 0
  let outstanding = 0
  const t0 = performance.now()
  const warmEnd = t0 + o.warmupS * 1000
  const measEnd = warmEnd + o.measureS * 1000

  const one = async (): Promise<string | undefined> => {
    const sessionId = o.sessionIds[seq++ % o.sessionIds.length] as string
    const started = performance.now()
    outstanding++
    let failed: string | undefined
    const chats = free.pop() as ChatWrites
    try {
      const begun = await chats.beginChat(o.userId, sessionId, 'hello', config.historyMaxMessages)
      if (begun === null) failed = 'session_not_found'
      else await chats.finishChat(sessionId, 'echo: hello')
    } catch (err) {
      failed = (err as { code?: string }).code ?? 'error'
    } finally {
      free.push(chats)
    }
    outstanding--
    const now = performance.now()
    if (now >= warmEnd && now < measEnd) {
      if (failed === undefined) { latencies.add(now - started); statuses.add('ok') } else errors.add(failed)
    }
    return failed
  }
  const loop = async (): Promise<void> => {
    while (performance.now() < measEnd && seq < o.maxRequests) {
      // After a failure wait a little so a dead server is not hammered in a hot loop.
      if (await one() !== undefined) await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const loops = Promise.all(Array.from({ length: o.concurrency }, loop))
  // Every statement is bounded by the pool's statement and acquire timeouts; this bounds the rest.
  const drained = await Promise.race([
    loops.then(() => true),
    new Promise<false>((resolve) => setTimeout(() => { resolve(false) }, Math.max(0, measEnd - performance.now()) + o.drainMs).unref())
  ])
  const unfinished = drained ? 0 : outstanding

  const close = async (): Promise<void> => {
    await Promise.race([pool.end(), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
  }
  const result = { ...loadResult('pg', o, { latencies, statuses, errors, unfinished }), pool_size: config.dbPoolSize }
  return { result, close }
}
