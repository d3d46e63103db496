/** Users: create and look up. Usernames are unique case-insensitively (see the migration). */
import type { Kysely } from 'kysely'
import { sql } from 'kysely'
import type { Database } from './schema.js'

export interface UserRow { id: string, username: string, password_hash: string }

export function createAccounts (db: Kysely<Database>) {
  return {
    /** Returns null when the username is taken. */
    async create (username: string, passwordHash: string): Promise<{ id: string, username: string } | null> {
      const row = await db.insertInto('users')
        .values({ username, password_hash: passwordHash })
        .onConflict((oc) => oc.expression(sql`lower(username)`).doNothing())
        .returning(['id', 'username'])
        .executeTakeFirst()
      return row ?? null
    },
    async findByUsername (username: string): Promise<UserRow | undefined> {
      return await db.selectFrom('users')
        .select(['id', 'username', 'password_hash'])
        .where(sql`lower(username)`, '=', username.toLowerCase())
        .executeTakeFirst()
    },
    /** Replaces a hash only if it is still `previous` (a concurrent change wins); true when it did. */
    async replaceHash (id: string, previous: string, next: string): Promise<boolean> {
      const result = await db.updateTable('users').set({ password_hash: next }).where('id', '=', id).where('password_hash', '=', previous).executeTakeFirst()
      return Number(result.numUpdatedRows) > 0
    },
    async findById (id: string): Promise<{ id: string, username: string } | undefined> {
      return await db.selectFrom('users').select(['id', 'username']).where('id', '=', id).executeTakeFirst()
    }
  }
}

export type Accounts = ReturnType<typeof createAccounts>
