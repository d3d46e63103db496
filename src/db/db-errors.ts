/**
 * What a PostgreSQL or pool error means for the caller. Anything that says "the database
 * cannot serve now" becomes 503 db_unavailable; a unique violation is the caller's 409.
 */
export type DbFailure = 'unavailable' | 'unique_violation' | 'other'

// SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator
// intervention (57014 query_canceled is statement_timeout, 57P01 admin shutdown), 58 system error.
const UNAVAILABLE_CLASSES = ['08', '53', '57', '58']
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])

export function classifyDbError (err: unknown): DbFailure {
  if (typeof err !== 'object' || err === null) return 'other'
  const e = err as { code?: unknown, message?: unknown }
  const code = typeof e.code === 'string' ? e.code : ''
  if (code === '23505') return 'unique_violation'
  if (NETWORK_CODES.has(code)) return 'unavailable'
  if (/^[0-9A-Z]{5}$/.test(code) && UNAVAILABLE_CLASSES.includes(code.slice(0, 2))) return 'unavailable'
  const message = typeof e.message === 'string' ? e.message : ''
  // pg-pool and pg's own client-side timeouts and dead connections carry no SQLSTATE.
  if (/timeout exceeded when trying to connect|Query read timeout|Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i.test(message)) return 'unavailable'
  return 'other'
}

/**
 * A failure of the connection or the server, as opposed to one statement's: SQLSTATE class
 * 08 (connection exception), 57P01-57P03 (the server shutting down or not accepting
 * connections), network errors, and pg's client-side "Connection terminated" / "Query read
 * timeout" (the server stopped answering). Such a connection is discarded and the database
 * reported down; a statement timeout (57014) or a full pool is neither.
 */
export function isConnectionFailure (err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  const e = err as { code?: unknown, message?: unknown }
  const code = typeof e.code === 'string' ? e.code : ''
  if (NETWORK_CODES.has(code) || code.startsWith('08') || /^57P0[1-3]$/.test(code)) return true
  const message = typeof e.message === 'string' ? e.message : ''
  return /Query read timeout|Connection terminated|Client has encountered a connection error|not queryable/i.test(message)
}
