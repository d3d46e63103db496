/**
 * Schema migrations, in code so that the compiled server carries them. They run at start-up
 * and with `npm run migrate`; kysely's Migrator records what ran in kysely_migration and
 * takes a lock, so running them again (or from two instances at once) is a no-op.
 */
import { Migrator, sql, type Kysely, type Migration, type MigrationResultSet } from 'kysely'

const migrations: Record<string, Migration> = {
  '0001_accounts_sessions_messages': {
    async up (db: Kysely<any>) {
      await db.schema.createTable('users')
        .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute()
      // Usernames are unique regardless of case: "Alice" and "alice" are one account.
      await sql`CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username))`.execute(db)

      await db.schema.createTable('chat_sessions')
        .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
        .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('title', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute()
      // GET /api/chatbot/sessions: a user's sessions, newest first.
      await db.schema.createIndex('chat_sessions_user_created_idx').on('chat_sessions').columns(['user_id', 'created_at desc']).execute()

      await db.schema.createTable('chat_messages')
        .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
        .addColumn('seq', 'bigint', (c) => c.notNull().generatedAlwaysAsIdentity())
        .addColumn('session_id', 'uuid', (c) => c.notNull().references('chat_sessions.id').onDelete('cascade'))
        .addColumn('role', 'text', (c) => c.notNull().check(sql`role IN ('user', 'assistant')`))
        .addColumn('content', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`clock_timestamp()`))
        .execute()
      // History (last N of a session) and the messages listing both walk this index.
      await db.schema.createIndex('chat_messages_session_seq_idx').on('chat_messages').columns(['session_id', 'seq']).execute()
    },
    async down (db: Kysely<any>) {
      await db.schema.dropTable('chat_messages').execute()
      await db.schema.dropTable('chat_sessions').execute()
      await db.schema.dropTable('users').execute()
    }
  },
  // Partial answers (contract v1.1): an assistant turn keeps the text the user saw and says how
  // it ended. A constant default adds the column without rewriting the table (PostgreSQL 11+);
  // the check is added NOT VALID and validated apart, so the scan of existing rows holds only a
  // SHARE UPDATE EXCLUSIVE lock and chats go on meanwhile.
  '0002_message_status': {
    async up (db: Kysely<any>) {
      await db.schema.alterTable('chat_messages').addColumn('status', 'text', (c) => c.notNull().defaultTo('complete')).execute()
      await sql`ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_status_check CHECK (status IN ('complete', 'cancelled', 'stalled', 'timed_out', 'failed', 'interrupted')) NOT VALID`.execute(db)
      await sql`ALTER TABLE chat_messages VALIDATE CONSTRAINT chat_messages_status_check`.execute(db)
    },
    async down (db: Kysely<any>) {
      await db.schema.alterTable('chat_messages').dropColumn('status').execute()
    }
  },
  // A version per session, bumped by triggers in the transaction of every change to its
  // messages, whoever makes it (this gateway, another one, an older release during a rolling
  // deploy, a script, a retention job): the gateway's history cache (chat-writes.ts) is valid
  // exactly while the version is the one it expects. Sessions are locked in id order first, so
  // two gateways' batches over the same sessions wait for each other instead of deadlocking.
  // TRUNCATE bumps every session. A constant default: no table rewrite.
  '0003_session_version': {
    async up (db: Kysely<any>) {
      await db.schema.alterTable('chat_sessions').addColumn('version', 'bigint', (c) => c.notNull().defaultTo(0)).execute()
      await sql`
        CREATE FUNCTION chat_sessions_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'TRUNCATE' THEN
            UPDATE chat_sessions SET version = version + 1;
            RETURN NULL;
          END IF;
          PERFORM 1 FROM chat_sessions
            WHERE id IN (SELECT session_id FROM changed_messages) ORDER BY id FOR NO KEY UPDATE;
          UPDATE chat_sessions s SET version = s.version + c.n
          FROM (SELECT session_id, count(*) AS n FROM changed_messages GROUP BY session_id) c
          WHERE s.id = c.session_id;
          RETURN NULL;
        END $$`.execute(db)
      await sql`
        CREATE TRIGGER chat_messages_bump_version_insert AFTER INSERT ON chat_messages
        REFERENCING NEW TABLE AS changed_messages FOR EACH STATEMENT EXECUTE FUNCTION chat_sessions_bump_version()`.execute(db)
      await sql`
        CREATE TRIGGER chat_messages_bump_version_update AFTER UPDATE ON chat_messages
        REFERENCING NEW TABLE AS changed_messages FOR EACH STATEMENT EXECUTE FUNCTION chat_sessions_bump_version()`.execute(db)
      await sql`
        CREATE TRIGGER chat_messages_bump_version_delete AFTER DELETE ON chat_messages
        REFERENCING OLD TABLE AS changed_messages FOR EACH STATEMENT EXECUTE FUNCTION chat_sessions_bump_version()`.execute(db)
      await sql`
        CREATE TRIGGER chat_messages_bump_version_truncate AFTER TRUNCATE ON chat_messages
        FOR EACH STATEMENT EXECUTE FUNCTION chat_sessions_bump_version()`.execute(db)
    },
    async down (db: Kysely<any>) {
      for (const op of ['insert', 'update', 'delete', 'truncate']) {
        await sql.raw(`DROP TRIGGER chat_messages_bump_version_${op} ON chat_messages`).execute(db)
      }
      await sql`DROP FUNCTION chat_sessions_bump_version()`.execute(db)
      await db.schema.alterTable('chat_sessions').dropColumn('version').execute()
    }
  },
  // The login limits (LOGIN_MAX_FAILURES per username and per address) held in PostgreSQL, so
  // that N gateways do not allow N times the failures (src/auth/login-throttle.ts). A token
  // bucket per key; a row whose bucket has refilled is worth nothing and is swept.
  '0004_login_throttle': {
    async up (db: Kysely<any>) {
      await db.schema.createTable('login_throttle')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('tokens', 'double precision', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute()
      await db.schema.createIndex('login_throttle_updated_at').on('login_throttle').column('updated_at').execute()
    },
    async down (db: Kysely<any>) {
      await db.schema.dropTable('login_throttle').execute()
    }
  }
}

export const MIGRATION_NAMES = Object.keys(migrations)

export async function migrateToLatest (db: Kysely<any>): Promise<MigrationResultSet> {
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } })
  const result = await migrator.migrateToLatest()
  if (result.error !== undefined) throw result.error
  return result
}
