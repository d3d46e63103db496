/**
 * Group-committed chat writes (src/db/chat-writes.ts) against a real PostgreSQL: a batch is one
 * statement, yet each caller gets exactly what one statement per write would have given it.
 */
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import t, { type Test } from 'tap'
import { systemClock } from '../../src/clock.js'
import { openDatabase, type Database } from '../../src/db/database.js'
import { silentLogger } from '../../src/log.js'
import { createTestDatabase } from '../fixtures/database.js'

async function open (t: Test, over: { writeBatchMax?: number, historyCacheMaxBytes?: number, url?: string } = {}): Promise<{ db: Database, batches: number[], splits: number[], lookups: string[] }> {
  const url = over.url ?? (await createTestDatabase(t)).url
  const batches: number[] = []
  const splits: number[] = []
  const lookups: string[] = []
  const db = await openDatabase({
    url, dataDir: '', embeddedPort: 0, poolSize: 4, acquireTimeoutMs: 2000, statementTimeoutMs: 5000, idleInTxTimeoutMs: 10_000,
    healthIntervalMs: 60_000, writeBatchMax: over.writeBatchMax ?? 256, writeQueueMax: 10_000, historyMax: 50, historyCacheMaxBytes: over.historyCacheMaxBytes ?? 1_000_000, clock: systemClock, log: silentLogger(),
    onWriteBatch: (n) => { batches.push(n) },
    onWriteSplit: (n) => { splits.push(n) },
    onHistory: (result) => { lookups.push(result) }
  })
  t.teardown(() => db.close())
  return { db, batches, splits, lookups }
}

async function userWithSession (db: Database, name: string): Promise<{ userId: string, sessionId: string }> {
  const user = await db.accounts.create(`${name}-${randomUUID().slice(0, 8)}`, 'x')
  if (user === null) throw new Error('no user')
  const session = await db.chats.createSession(user.id, name)
  return { userId: user.id, sessionId: session.id }
}

t.test('writes submitted while a batch commits share one statement, store in submission order, and each history includes the batch\'s earlier turns', async (t) => {
  const { db, batches } = await open(t)
  const a = await userWithSession(db, 'order')
  await db.writes.beginChat(a.userId, a.sessionId, 'zero', 50)
  await db.writes.finishChat(a.sessionId, 'zero answered')
  batches.length = 0
  // The first write goes alone; the next four gather behind it and go as one batch.
  const lone = db.writes.beginChat(a.userId, a.sessionId, 'one', 50)
  const two = db.writes.beginChat(a.userId, a.sessionId, 'two', 50)
  const oneAnswer = db.writes.finishChat(a.sessionId, 'one answered')
  const three = db.writes.beginChat(a.userId, a.sessionId, 'three', 3)
  const partial = db.writes.finishChat(a.sessionId, 'two, partly', 'cancelled')
  const [h1, h2, id1, h3, id2] = await Promise.all([lone, two, oneAnswer, three, partial])
  t.same(batches, [1, 4], 'one write, then a batch of four')
  t.same(h1?.history.map((m) => m.content), ['zero', 'zero answered'])
  t.same(h2?.history.map((m) => m.content), ['zero', 'zero answered', 'one'], 'sees the turn stored before it (previous batch)')
  t.same(h3?.history.map((m) => m.content), ['one', 'two', 'one answered'], 'sees this batch\'s earlier rows, cut to its own bound of 3')
  t.not(id1.id, id2.id)
  const rows = await db.chats.listMessages(a.userId, a.sessionId, 100)
  t.same(rows?.map((r) => [r.role, r.content, r.status]), [
    ['user', 'zero', 'complete'],
    ['assistant', 'zero answered', 'complete'],
    ['user', 'one', 'complete'],
    ['user', 'two', 'complete'],
    ['assistant', 'one answered', 'complete'],
    ['user', 'three', 'complete'],
    ['assistant', 'two, partly', 'cancelled']
  ], 'stored once each, in the order they were submitted')
  t.equal(rows?.find((r) => r.content === 'one answered')?.id, id1.id, 'the id returned is the stored message\'s')
})

t.test('a user turn for a session that is not the user\'s is refused (null) without stopping the rest of its batch', async (t) => {
  const { db, batches } = await open(t)
  const a = await userWithSession(db, 'owner')
  const b = await userWithSession(db, 'stranger')
  const lone = db.writes.beginChat(a.userId, a.sessionId, 'first', 50)
  const stranger = db.writes.beginChat(b.userId, a.sessionId, 'not mine', 50)
  const mine = db.writes.beginChat(a.userId, a.sessionId, 'second', 50)
  const [, refused, accepted] = await Promise.all([lone, stranger, mine])
  t.equal(refused, null)
  t.same(accepted?.history.map((m) => m.content), ['first'], 'the refused turn is in nobody\'s history')
  t.same(batches, [1, 2])
  const rows = await db.chats.listMessages(a.userId, a.sessionId, 100)
  t.same(rows?.map((r) => r.content), ['first', 'second'])
  t.equal(await db.writes.beginChat(a.userId, 'not-a-uuid', 'x', 50), null, 'an id that cannot exist never reaches the database')
})

t.test('a batch with one write the database rejects (its session is gone) fails only that write; the others commit', async (t) => {
  const { db, splits } = await open(t)
  const a = await userWithSession(db, 'constraint')
  const lone = db.writes.beginChat(a.userId, a.sessionId, 'q1', 50)
  const good1 = db.writes.finishChat(a.sessionId, 'a1')
  const orphan = db.writes.finishChat(randomUUID(), 'answer for a deleted session')
  const good2 = db.writes.beginChat(a.userId, a.sessionId, 'q2', 50)
  const results = await Promise.allSettled([lone, good1, orphan, good2])
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
  t.match((results[2] as PromiseRejectedResult).reason, { code: '23503' }, 'a foreign-key violation, for that write alone')
  t.same(splits, [3], 'the batch of three was run again one write at a time')
  const rows = await db.chats.listMessages(a.userId, a.sessionId, 100)
  t.same(rows?.map((r) => r.content), ['q1', 'a1', 'q2'], 'each good write stored exactly once, in order')
})

t.test('a hundred concurrent chats on fifty sessions: every turn stored exactly once, each session\'s in order', async (t) => {
  const { db, batches } = await open(t, { writeBatchMax: 32 })
  const sessions = await Promise.all(Array.from({ length: 50 }, async (_, i) => await userWithSession(db, `load${i}`)))
  batches.length = 0
  await Promise.all(Array.from({ length: 100 }, async (_, i) => {
    const s = sessions[i % 50] as { userId: string, sessionId: string }
    await db.writes.beginChat(s.userId, s.sessionId, `q${i}`, 50)
    await db.writes.finishChat(s.sessionId, `a${i}`)
  }))
  t.ok(Math.max(...batches) > 1, `batched (sizes ${batches.join(',')})`)
  t.ok(Math.max(...batches) <= 32, 'never over DB_WRITE_BATCH_MAX')
  t.equal(batches.reduce((x, y) => x + y, 0), 200, 'two writes per chat')
  for (const [k, s] of sessions.entries()) {
    const rows = await db.chats.listMessages(s.userId, s.sessionId, 100)
    const contents = rows?.map((r) => r.content) ?? []
    t.same([...contents].sort(), [`a${k}`, `a${k + 50}`, `q${k}`, `q${k + 50}`].sort(), `session ${k}: each turn once`)
    for (const i of [k, k + 50]) t.ok(contents.indexOf(`q${i}`) < contents.indexOf(`a${i}`), `session ${k}: q${i} before its answer`)
  }
})

/** The newest `n` turns of a session straight from the table, oldest first. */
async function newestTurns (db: Database, sessionId: string, n: number): Promise<string[]> {
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  try {
    const rows = await client.query<{ content: string }>('SELECT content FROM (SELECT content, seq FROM chat_messages WHERE session_id = $1 ORDER BY seq DESC LIMIT $2) r ORDER BY seq', [sessionId, n])
    return rows.rows.map((r) => r.content)
  } finally {
    await client.end()
  }
}

t.test('a session this gateway wrote last is served from the history cache, and each history equals the table\'s newest turns', async (t) => {
  const { db, lookups } = await open(t)
  const a = await userWithSession(db, 'cache')
  for (let i = 0; i < 30; i++) {
    const expected = await newestTurns(db, a.sessionId, 20)
    const begun = await db.writes.beginChat(a.userId, a.sessionId, `q${i}`, 20)
    t.same(begun?.history.map((m) => m.content), expected, `turn ${i}`)
    await db.writes.finishChat(a.sessionId, `a${i}`, i % 3 === 0 ? 'cancelled' : 'complete')
  }
  t.same(lookups, ['miss', ...Array(29).fill('hit')], 'read once, then served from the cache')
  t.ok(db.writes.cacheBytes > 0)
})

t.test('a write by another gateway, or by anything else, to a cached session makes the next chat read the history again', async (t) => {
  const one = await open(t)
  const two = await open(t, { url: one.db.url })
  const a = await userWithSession(one.db, 'shared')
  await one.db.writes.beginChat(a.userId, a.sessionId, 'q1', 20)
  await one.db.writes.finishChat(a.sessionId, 'a1')
  await one.db.writes.beginChat(a.userId, a.sessionId, 'q2', 20)
  t.same(one.lookups, ['miss', 'hit'])
  // The other gateway answers on the same session.
  await two.db.writes.finishChat(a.sessionId, 'a2 from the other gateway')
  const third = await one.db.writes.beginChat(a.userId, a.sessionId, 'q3', 20)
  t.same(third?.history.map((m) => m.content), ['q1', 'a1', 'q2', 'a2 from the other gateway'], 'the other gateway\'s turn is in the history')
  t.same(one.lookups, ['miss', 'hit', 'miss'], 'the version check saw the other writer')
  // A writer that knows nothing of the cache (an older release, a script): the trigger bumps the version all the same.
  const admin = new pg.Client({ connectionString: one.db.url })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query("INSERT INTO chat_messages (session_id, role, content) VALUES ($1, 'assistant', 'a3 written directly')", [a.sessionId])
  const fourth = await one.db.writes.beginChat(a.userId, a.sessionId, 'q4', 20)
  t.same(fourth?.history.map((m) => m.content).slice(-2), ['q3', 'a3 written directly'])
  t.same(one.lookups.at(-1), 'miss')
  const fifth = await one.db.writes.beginChat(a.userId, a.sessionId, 'q5', 20)
  t.same(fifth?.history.map((m) => m.content).slice(-2), ['a3 written directly', 'q4'])
  t.same(one.lookups.at(-1), 'hit', 'and then it is cached again')
})

t.test('the history cache stays within its bytes, least recently used out first', async (t) => {
  const { db, lookups } = await open(t, { historyCacheMaxBytes: 4000 })
  const sessions = await Promise.all(Array.from({ length: 6 }, async (_, i) => await userWithSession(db, `lru${i}`)))
  for (const s of sessions) await db.writes.beginChat(s.userId, s.sessionId, 'x'.repeat(300), 20)
  t.ok(db.writes.cacheBytes <= 4000, `${db.writes.cacheBytes} B held`)
  lookups.length = 0
  const last = sessions[5] as { userId: string, sessionId: string }
  const first = sessions[0] as { userId: string, sessionId: string }
  await db.writes.beginChat(last.userId, last.sessionId, 'again', 20)
  await db.writes.beginChat(first.userId, first.sessionId, 'again', 20)
  t.same(lookups, ['hit', 'miss'], 'the newest session is still cached, the oldest was let go')
})

t.test('a message deleted, edited or truncated away outside the gateway makes the next chat read its history again', async (t) => {
  const { db, lookups } = await open(t)
  const a = await userWithSession(db, 'edited')
  const admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
  t.teardown(() => admin.end())
  await db.writes.beginChat(a.userId, a.sessionId, 'secret', 20)
  await db.writes.finishChat(a.sessionId, 'a1')
  await db.writes.beginChat(a.userId, a.sessionId, 'q2', 20)
  t.same(lookups, ['miss', 'hit'])
  await admin.query("DELETE FROM chat_messages WHERE content = 'secret'")
  const afterDelete = await db.writes.beginChat(a.userId, a.sessionId, 'q3', 20)
  t.same(afterDelete?.history.map((m) => m.content), ['a1', 'q2'], 'the deleted message is gone from the history')
  t.equal(lookups.at(-1), 'miss')
  await admin.query("UPDATE chat_messages SET content = 'A1 (edited)' WHERE content = 'a1'")
  const afterEdit = await db.writes.beginChat(a.userId, a.sessionId, 'q4', 20)
  t.same(afterEdit?.history.map((m) => m.content), ['A1 (edited)', 'q2', 'q3'])
  t.equal(lookups.at(-1), 'miss')
  await admin.query('TRUNCATE chat_messages')
  const afterTruncate = await db.writes.beginChat(a.userId, a.sessionId, 'q5', 20)
  t.same(afterTruncate?.history, [])
  t.equal(lookups.at(-1), 'miss')
})

t.test('a turn with a lone surrogate is cached as PostgreSQL stores it, and a narrower bound does not shrink the cached window', async (t) => {
  const { db, lookups } = await open(t)
  const a = await userWithSession(db, 'surrogate')
  const cut = 'half a pair: \ud83d'
  await db.writes.beginChat(a.userId, a.sessionId, 'q1', 20)
  await db.writes.finishChat(a.sessionId, cut, 'cancelled')
  // A narrower bound reads (a miss would otherwise cache only 1 turn as the whole window).
  const narrow = await db.writes.beginChat(a.userId, a.sessionId, 'q2', 1)
  t.same(narrow?.history.map((m) => m.content), ['half a pair: \ufffd'], 'the stored text, replacement character and all')
  const wide = await db.writes.beginChat(a.userId, a.sessionId, 'q3', 20)
  t.same(wide?.history.map((m) => m.content), ['q1', 'half a pair: \ufffd', 'q2'])
  t.same(await newestTurns(db, a.sessionId, 3), ['half a pair: \ufffd', 'q2', 'q3'], 'as in the table')
  t.equal(lookups.at(-1), 'hit')
})
