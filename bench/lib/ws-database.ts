/**
 * A fresh PostgreSQL database for one bench:ws run on a real server (never the embedded one):
 * `CREATE DATABASE tether_benchws_<random>` through the admin URL, dropped with FORCE at the
 * end. The gateway migrates it at start-up.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

/** Trust auth on loopback in the dev container; BENCH_DATABASE_URL points elsewhere. */
export const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test'

export interface WsBenchDatabase {
  readonly url: string
  readonly name: string
  readonly serverVersion: string
  /** Drops the database; bounded, never throws; returns a problem to report, if any. */
  drop: () => Promise<string | undefined>
}

function adminClient (url: string): pg.Client {
  return new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, query_timeout: 30_000, application_name: 'tether-bench-ws' })
}

export async function createWsBenchDatabase (adminUrl: string): Promise<WsBenchDatabase> {
  const name = `tether_benchws_${randomBytes(6).toString('hex')}`
  const admin = adminClient(adminUrl)
  try {
    await admin.connect()
  } catch (err) {
    throw new Error(`cannot connect to PostgreSQL at ${redact(adminUrl)} (BENCH_DATABASE_URL): ${(err as Error).message}`)
  }
  admin.on('error', () => { /* shows up as a failed DROP, reported there */ })
  let version: string
  try {
    version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? 'unknown'
    // The name is ours ([a-z0-9_]), so quoting it as an identifier is all it needs.
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
    serverVersion: version,
    async drop () {
      if (dropped) return undefined
      dropped = true
      try {
        // PostgreSQL 13+: FORCE ends the gateway's leftover connections instead of failing.
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
