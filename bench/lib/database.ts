/**
 * A fresh PostgreSQL database for one bench run, on a real server (never the embedded one):
 * `CREATE DATABASE tether_bench_<random>` through the admin URL, dropped when the run ends.
 * The gateways migrate it themselves at start-up. Also finds the server processes that serve
 * it (`pg_stat_activity`), so the report can show PostgreSQL's CPU next to the gateway's.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

/** Trust auth on loopback in the dev container; BENCH_DATABASE_URL points elsewhere. */
export const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test'

export interface BenchDatabase {
  /** The DATABASE_URL the gateways get. */
  readonly url: string
  readonly name: string
  readonly serverVersion: string
  /** Server settings that decide what a commit costs (fsync, synchronous_commit, ...). */
  readonly serverSettings: Record<string, string>
  /** Pids of the server backends connected to this database right now. */
  backendPids: () => Promise<number[]>
  /** Rows in chat_messages by role, read through a connection to the bench database. */
  countMessages: () => Promise<Record<string, number>>
  /** Drops the database (closing its connections first); bounded, never throws. */
  drop: () => Promise<string | undefined>
}

/** What a chat's two single-statement transactions wait for on the server: the WAL flush. */
const COMMIT_SETTINGS = ['fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay', 'shared_buffers', 'max_connections']

/** Admin connections: short timeouts so a missing server fails the run in seconds, not minutes. */
function adminClient (url: string): pg.Client {
  return new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, query_timeout: 30_000, application_name: 'tether-bench' })
}

/** The URL of database `name` on the same server, user and options as `adminUrl`. */
function urlFor (adminUrl: string, name: string): string {
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  return u.toString()
}

export async function createBenchDatabase (adminUrl: string): Promise<BenchDatabase> {
  const name = `tether_bench_${randomBytes(6).toString('hex')}`
  const admin = adminClient(adminUrl)
  try {
    await admin.connect()
  } catch (err) {
    throw new Error(`cannot connect to PostgreSQL at ${redact(adminUrl)} (BENCH_DATABASE_URL): ${(err as Error).message}`)
  }
  // The admin connection stays open for the run: pg_stat_activity is read through it before
  // and after every load run, and it drops the database at the end.
  admin.on('error', () => { /* a dropped admin link shows up as a failed query, handled there */ })
  let version: string
  let settings: Record<string, string>
  try {
    version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? 'unknown'
    const rows = (await admin.query<{ name: string, setting: string, unit: string | null }>(
      'SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1) ORDER BY name', [COMMIT_SETTINGS])).rows
    settings = Object.fromEntries(rows.map((r) => [r.name, r.unit === null ? r.setting : `${r.setting} x ${r.unit}`]))
    // The name is ours ([a-z0-9_]), so quoting it as an identifier is all it needs.
    await admin.query(`CREATE DATABASE "${name}"`)
  } catch (err) {
    await admin.end().catch(() => undefined)
    throw new Error(`cannot create the bench database on ${redact(adminUrl)}: ${(err as Error).message}`)
  }

  let dropped = false
  return {
    url: urlFor(adminUrl, name),
    name,
    serverVersion: version,
    serverSettings: settings,
    async backendPids () {
      const r = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name])
      return r.rows.map((row) => row.pid)
    },
    async countMessages () {
      const c = adminClient(urlFor(adminUrl, name))
      await c.connect()
      try {
        const r = await c.query<{ role: string, n: number }>('SELECT role, count(*)::int AS n FROM chat_messages GROUP BY role ORDER BY role')
        return Object.fromEntries(r.rows.map((row) => [row.role, row.n]))
      } finally {
        await c.end().catch(() => undefined)
      }
    },
    async drop () {
      if (dropped) return undefined
      dropped = true
      try {
        // PostgreSQL 13+: FORCE ends the gateways' leftover connections instead of failing.
        await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
        return undefined
      } catch (err) {
        return `could not drop database ${name}: ${(err as Error).message} (drop it by hand)`
      } finally {
        await admin.end().catch(() => undefined)
      }
    }
  }
}

/** The URL without its password, for messages. */
export function redact (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable URL)'
  }
}
