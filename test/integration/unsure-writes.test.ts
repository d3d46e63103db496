/**
 * Writes whose commit is unknown are deleted once the database answers (src/db/unsure-writes.ts),
 * against a real PostgreSQL: through a proxy that refuses connections first, then lets them by.
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { createChatStore } from '../../src/db/chat-store.js'
import { migrateToLatest } from '../../src/db/migrations.js'
import { createDbPool } from '../../src/db/pool.js'
import { createUnsureWrites } from '../../src/db/unsure-writes.js'
import { createTestDatabase, proxiedDatabase } from '../fixtures/database.js'
import { waitFor } from '../fixtures/wait-for.js'

t.test('the rows of unsure writes are deleted once the database answers, before and without any new batch', async (t) => {
  const db = await createTestDatabase(t)
  const direct = createDbPool({ url: db.url, size: 2, acquireTimeoutMs: 1000, statementTimeoutMs: 2000, idleInTxTimeoutMs: 5000 })
  t.teardown(() => direct.end())
  await migrateToLatest(direct.db)
  const chats = createChatStore(direct.db)
  const { sql } = await import('kysely')
  const user = await sql<{ id: string }>`INSERT INTO users (username, password_hash) VALUES ('u', 'x') RETURNING id`.execute(direct.db)
  const session = await chats.createSession(user.rows[0]?.id as string, 's')
  const insert = async (content: string): Promise<string> => {
    const row = await sql<{ id: string }>`INSERT INTO chat_messages (session_id, role, content) VALUES (${session.id}, 'assistant', ${content}) RETURNING id`.execute(direct.db)
    return row.rows[0]?.id as string
  }
  const kept = { id: await insert('kept') }
  const committedAfterAll = { id: await insert('answered 503 but committed') }

  const { proxy, url } = await proxiedDatabase(t, db)
  const viaProxy = createDbPool({ url, size: 1, acquireTimeoutMs: 300, statementTimeoutMs: 1000, idleInTxTimeoutMs: 5000 })
  t.teardown(() => viaProxy.end())
  proxy.refuse(true)
  const undone: number[] = []
  const unsure = createUnsureWrites({ db: viaProxy.db, retryMs: 100, max: 10, onUndone: (n) => { undone.push(n) } })
  t.teardown(() => { unsure.stop() })
  unsure.add([committedAfterAll.id, randomUUID()])
  await unsure.undo()
  t.equal(unsure.pending, 2, 'the database is away: nothing undone, nothing lost, no throw')
  proxy.refuse(false)
  await waitFor(() => unsure.pending === 0, { timeoutMs: 5000, what: 'the timer to undo them' })
  t.same(undone, [1], 'the row that had committed is deleted; the one that had not is simply forgotten')
  const left = await chats.listMessages(user.rows[0]?.id as string, session.id, 10)
  t.same(left?.map((m) => m.id), [kept.id])
})

t.test('past its bound the oldest unsure ids are given up, and counted', async (t) => {
  const db = await createTestDatabase(t)
  const pool = createDbPool({ url: db.url, size: 1, acquireTimeoutMs: 1000, statementTimeoutMs: 2000, idleInTxTimeoutMs: 5000 })
  t.teardown(() => pool.end())
  let dropped = 0
  const unsure = createUnsureWrites({ db: pool.db, retryMs: 60_000, max: 3, onDropped: (n) => { dropped += n } })
  t.teardown(() => { unsure.stop() })
  unsure.add([randomUUID(), randomUUID()])
  unsure.add([randomUUID(), randomUUID()])
  t.equal(unsure.pending, 3)
  t.equal(dropped, 1)
})
