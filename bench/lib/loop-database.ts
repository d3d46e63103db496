/**
 * A fresh PostgreSQL database for one bench:loop run, on a real server (never the embedded
 * one): `CREATE DATABASE tether_loop_<random>` through the admin URL, dropped at the end (also
 * on a signal or the watchdog). The gateways migrate it themselves at start-up.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

/** Trust auth on loopback in the dev container; BENCH_DATABASE_URL points elsewhere. */
export const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test'

export interface LoopDatabase {
  /** The DATABASE_URL the gateways get. */
  readonly url: string
  readonly name: string
  readonly serverVersion: string
  /** Pids of the server backends connected to this database now (for their CPU). */
  backendPids: () => Promise<number[]>
  /** Drops the database, ending its leftover connections; bounded, never throws. */
  drop: () => Promise<string | undefined>
}

function client (url: string): pg.Client {
  return new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, query_timeout: 30_000, application_name: 'tether-bench-loop' })
}

export async function createLoopDatabase (adminUrl: string): Promise<LoopDatabase> {
  const name = `tether_loop_${randomBytes(6).toString('hex')}`
  const admin = client(adminUrl)
  try {
    await admin.connect()
  } catch (err) {
    throw new Error(`cannot connect to PostgreSQL at ${redact(adminUrl)} (BENCH_DATABASE_URL): ${(err as Error).message}`)
  }
  admin.on('error', () => { /* shows up as a failed query, handled there */ })
  let serverVersion: string
  try {
    serverVersion = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? 'unknown'
    // The name is ours ([a-z0-9_]): quoting it as an identifier is all it needs.
    await admin.query(`CREATE DATABASE "${name}"`)
  } catch (err) {
    await admin.end().catch(() => undefined)
    throw new Error(`cannot create the bench database on ${redact(adminUrl)}: ${(err as Error).message}`)
  }
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  let dropped = false
  return {
    url: u.toString(),
    name,
    serverVersion,
    async backendPids () {
      const r = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name])
      return r.rows.map((row) => row.pid)
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
