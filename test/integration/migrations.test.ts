import type { Kysely } from 'kysely'
import { sql } from 'kysely'
import t, { type Test } from 'tap'
import { MIGRATION_NAMES, migrateToLatest } from '../../src/db/migrations.js'
import { createDbPool, type DbPool } from '../../src/db/pool.js'
import { createTestDatabase } from '../fixtures/database.js'

function openPool (t: Test, url: string): DbPool {
  const pool = createDbPool({ url, size: 4, acquireTimeoutMs: 5000, statementTimeoutMs: 10_000, idleInTxTimeoutMs: 10_000 })
  t.teardown(() => pool.end())
  return pool
}

async function tables (db: Kysely<any>): Promise<string[]> {
  const result = await sql<{ table_name: string }>`
    SELECT table_name FROM information_schema.tables
    WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`.execute(db)
  return result.rows.map((r) => r.table_name)
}

async function indexes (db: Kysely<any>): Promise<Record<string, string>> {
  const result = await sql<{ indexname: string, indexdef: string }>`
    SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'`.execute(db)
  return Object.fromEntries(result.rows.map((r) => [r.indexname, r.indexdef]))
}

async function recorded (db: Kysely<any>): Promise<string[]> {
  const result = await sql<{ name: string }>`SELECT name FROM kysely_migration ORDER BY name`.execute(db)
  return result.rows.map((r) => r.name)
}

t.test('migrateToLatest on a fresh database creates the tables, their indexes and constraints', async (t) => {
  const { url } = await createTestDatabase(t)
  const { db } = openPool(t, url)
  t.same(await tables(db), [], 'the database starts empty')

  const result = await migrateToLatest(db)
  t.same(result.results?.map((r) => [r.migrationName, r.status]), MIGRATION_NAMES.map((name) => [name, 'Success']), 'every migration ran once')
  t.same(await tables(db), ['chat_messages', 'chat_sessions', 'kysely_migration', 'kysely_migration_lock', 'login_throttle', 'users'])
  t.same(await recorded(db), MIGRATION_NAMES)

  const found = await indexes(db)
  t.match(found.login_throttle_updated_at, /ON public\.login_throttle .*\(updated_at\)/, 'login buckets swept oldest first')
  t.match(found.users_username_lower_key, /CREATE UNIQUE INDEX .* ON public\.users .*\(lower\(username\)\)/, 'usernames unique regardless of case')
  t.match(found.chat_sessions_user_created_idx, /ON public\.chat_sessions .*\(user_id, created_at DESC\)/, 'a user\'s sessions, newest first')
  t.match(found.chat_messages_session_seq_idx, /ON public\.chat_messages .*\(session_id, seq\)/, 'a session\'s messages in order')
  for (const table of ['users', 'chat_sessions', 'chat_messages']) t.ok(found[`${table}_pkey`], `${table} has a primary key`)

  const columns = await sql<{ table_name: string, column_name: string, data_type: string, is_nullable: string }>`
    SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
    WHERE table_schema = 'public' AND table_name IN ('users', 'chat_sessions', 'chat_messages')`.execute(db)
  const column = (table: string, name: string): unknown => {
    const c = columns.rows.find((r) => r.table_name === table && r.column_name === name)
    return c === undefined ? undefined : `${c.data_type}${c.is_nullable === 'NO' ? ' not null' : ''}`
  }
  t.equal(column('users', 'id'), 'uuid not null')
  t.equal(column('users', 'username'), 'text not null')
  t.equal(column('users', 'password_hash'), 'text not null')
  t.equal(column('chat_sessions', 'user_id'), 'uuid not null')
  t.equal(column('chat_sessions', 'created_at'), 'timestamp with time zone not null')
  t.equal(column('chat_messages', 'seq'), 'bigint not null')
  t.equal(column('chat_messages', 'role'), 'text not null')
  t.equal(column('chat_messages', 'content'), 'text not null')

  // The constraints the stores rely on, exercised directly.
  const user = await sql<{ id: string }>`INSERT INTO users (username, password_hash) VALUES ('Alice', 'h') RETURNING id`.execute(db)
  await t.rejects(sql`INSERT INTO users (username, password_hash) VALUES ('aLICE', 'h')`.execute(db), { code: '23505' }, 'a second Alice in another case is a unique violation')
  const userId = user.rows[0]?.id as string
  const session = await sql<{ id: string, title: string }>`INSERT INTO chat_sessions (user_id) VALUES (${userId}) RETURNING id, title`.execute(db)
  t.equal(session.rows[0]?.title, '', 'title defaults to empty')
  const sessionId = session.rows[0]?.id as string
  await t.rejects(sql`INSERT INTO chat_messages (session_id, role, content) VALUES (${sessionId}, 'system', 'x')`.execute(db), { code: '23514' }, 'role is user or assistant')
  await t.rejects(sql`INSERT INTO chat_sessions (user_id) VALUES (gen_random_uuid())`.execute(db), { code: '23503' }, 'a session needs an existing user')
  await sql`INSERT INTO chat_messages (session_id, role, content) VALUES (${sessionId}, 'user', 'one'), (${sessionId}, 'assistant', 'two')`.execute(db)
  const seqs = await sql<{ seq: string }>`SELECT seq FROM chat_messages ORDER BY seq`.execute(db)
  t.ok(BigInt(seqs.rows[0]?.seq ?? 0) < BigInt(seqs.rows[1]?.seq ?? 0), 'seq increases')
  await sql`DELETE FROM users WHERE id = ${userId}`.execute(db)
  const left = await sql<{ n: number }>`SELECT (SELECT count(*) FROM chat_sessions)::int + (SELECT count(*) FROM chat_messages)::int AS n`.execute(db)
  t.equal(left.rows[0]?.n, 0, 'deleting a user deletes its sessions and messages')
})

t.test('running migrateToLatest again runs nothing and changes nothing', async (t) => {
  const { url } = await createTestDatabase(t)
  const { db } = openPool(t, url)
  await migrateToLatest(db)
  await sql`INSERT INTO users (username, password_hash) VALUES ('kept', 'h')`.execute(db)
  const before = await indexes(db)

  const again = await migrateToLatest(db)
  t.same(again.results, [], 'no migration re-run')
  t.equal(again.error, undefined)
  t.same(await recorded(db), MIGRATION_NAMES, 'each migration recorded once')
  t.same(await indexes(db), before, 'indexes unchanged')
  const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM users`.execute(db)
  t.equal(rows.rows[0]?.n, 1, 'data kept')

  // A new process (another pool) finds the schema up to date too.
  const other = openPool(t, url)
  t.same((await migrateToLatest(other.db)).results, [], 'a second instance runs nothing')
})

t.test('two concurrent migrateToLatest calls on a fresh database both succeed and the migration runs once', async (t) => {
  const { url } = await createTestDatabase(t)
  // Two pools stand in for two gateway instances starting at the same moment.
  const a = openPool(t, url)
  const b = openPool(t, url)
  const [ra, rb] = await Promise.all([migrateToLatest(a.db), migrateToLatest(b.db)])
  const ran = [...(ra.results ?? []), ...(rb.results ?? [])].filter((r) => r.status === 'Success').map((r) => r.migrationName)
  t.same(ran, MIGRATION_NAMES, 'between them, each migration ran exactly once')
  t.same(await recorded(a.db), MIGRATION_NAMES)
  t.same(await tables(a.db), ['chat_messages', 'chat_sessions', 'kysely_migration', 'kysely_migration_lock', 'login_throttle', 'users'])
})

t.test('four instances migrating a fresh database at once all succeed and the migration runs once', async (t) => {
  const { url } = await createTestDatabase(t)
  const pools = [openPool(t, url), openPool(t, url), openPool(t, url), openPool(t, url)]
  const results = await Promise.all(pools.map(async (p) => await migrateToLatest(p.db)))
  t.equal(results.flatMap((r) => r.results ?? []).filter((r) => r.status === 'Success').length, MIGRATION_NAMES.length)
  t.same(await recorded(pools[0]!.db), MIGRATION_NAMES)
})
