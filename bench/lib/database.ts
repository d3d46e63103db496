/**
 * A fresh PostgreSQL database for one bench run, on a real server (never the embedded one):
 * `CREATE DATABASE <prefix><12 random hex>` through the admin URL, dropped with FORCE when the
 * run ends (bench/lib/run.ts: also on a signal or the watchdog). The gateways migrate it
 * themselves at start-up. It also finds the server processes that serve it (`pg_stat_activity`),
 * so a report can show PostgreSQL's CPU next to the gateway's, and counts the chat rows stored.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

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
  /** Drops the database (ending its leftover connections); bounded, never throws; returns a problem to report, if any. */
  drop: () => Promise<string | undefined>
}

export interface DatabaseOptions {
  readonly adminUrl: string
  /** Each family's own, as docs/benchmarks.md names them: `tether_bench_`, `tether_benchws_`, `tether_loop_`. */
  readonly namePrefix: string
  /** Of the bench's own connections, so pg_stat_activity tells them from the gateway's (`tether`). */
  readonly applicationName: string
}

/** What a chat's two single-statement transactions wait for on the server: the WAL flush. */
const COMMIT_SETTINGS = ['fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay', 'shared_buffers', 'max_connections']

/** Short timeouts so a missing server fails the run in seconds, not minutes. */
function client (url: string, applicationName: string): pg.Client {
  return new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, query_timeout: 30_000, application_name: applicationName })
}

/** The URL of database `name` on the same server, user and options as `adminUrl`. */
function urlFor (adminUrl: string, name: string): string {
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  return u.toString()
}

export async function createBenchDatabase (o: DatabaseOptions): Promise<BenchDatabase> {
  const name = `${o.namePrefix}${randomBytes(6).toString('hex')}`
  const admin = client(o.adminUrl, o.applicationName)
  try {
    await admin.connect()
  } catch (err) {
    throw new Error(`cannot connect to PostgreSQL at ${redact(o.adminUrl)} (BENCH_DATABASE_URL): ${(err as Error).message}`)
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
    throw new Error(`cannot create the bench database on ${redact(o.adminUrl)}: ${(err as Error).message}`)
  }

  let dropped = false
  return {
    url: urlFor(o.adminUrl, name),
    name,
    serverVersion: version,
    serverSettings: settings,
    async backendPids () {
      const r = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name])
      return r.rows.map((row) => row.pid)
    },
    async countMessages () {
      const c = client(urlFor(o.adminUrl, name), o.applicationName)
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

/** The URL without its password, for messages and reports. */
export function redact (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable URL)'
  }
}
