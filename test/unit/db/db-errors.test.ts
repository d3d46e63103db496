import t from 'tap'
import { classifyDbError } from '../../../src/db/db-errors.js'

/** What pg hands us for a server-side error: an Error carrying the SQLSTATE in `code`. */
function pgError (code: string, message = `server said ${code}`): Error {
  return Object.assign(new Error(message), { code, severity: 'ERROR' })
}

t.test('SQLSTATE classes 08, 53, 57 and 58 mean the database cannot serve now', async (t) => {
  const unavailable = {
    '08000': 'connection_exception',
    '08001': 'sqlclient_unable_to_establish_sqlconnection',
    '08003': 'connection_does_not_exist',
    '08006': 'connection_failure',
    '08P01': 'protocol_violation',
    53000: 'insufficient_resources',
    53100: 'disk_full',
    53200: 'out_of_memory',
    53300: 'too_many_connections',
    57000: 'operator_intervention',
    57014: 'query_canceled (statement_timeout)',
    '57P01': 'admin_shutdown',
    '57P02': 'crash_shutdown',
    '57P03': 'cannot_connect_now (starting up)',
    58000: 'system_error',
    58030: 'io_error'
  }
  for (const [code, name] of Object.entries(unavailable)) {
    t.equal(classifyDbError(pgError(code)), 'unavailable', `${code} ${name}`)
  }
})

t.test('a unique violation (23505) is the caller\'s conflict, not an outage', async (t) => {
  t.equal(classifyDbError(pgError('23505', 'duplicate key value violates unique constraint "users_username_key"')), 'unique_violation')
})

t.test('syntax, constraint and data errors are plain failures', async (t) => {
  const other = {
    42601: 'syntax_error',
    '42P01': 'undefined_table',
    23503: 'foreign_key_violation',
    23502: 'not_null_violation',
    '22P02': 'invalid_text_representation',
    40001: 'serialization_failure',
    '25P02': 'in_failed_sql_transaction'
  }
  for (const [code, name] of Object.entries(other)) {
    t.equal(classifyDbError(pgError(code)), 'other', `${code} ${name}`)
  }
})

t.test('a code that only looks like an unavailable class by prefix is not taken for one', async (t) => {
  t.equal(classifyDbError(pgError('08')), 'other', 'two characters are not a SQLSTATE')
  t.equal(classifyDbError(pgError('5701')), 'other', 'four characters are not a SQLSTATE')
  t.equal(classifyDbError(pgError('57014x')), 'other', 'six characters are not a SQLSTATE')
  t.equal(classifyDbError(pgError('x57014')), 'other')
})

t.test('network failures reaching the server mean unavailable', async (t) => {
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']) {
    const err = Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code, errno: -1, syscall: 'connect' })
    t.equal(classifyDbError(err), 'unavailable', code)
  }
})

t.test('pg-pool\'s acquire timeout and pg\'s client-side failures mean unavailable', async (t) => {
  // The messages pg-pool 3 and pg 8 produce; none of them carries a code.
  const messages = [
    'timeout exceeded when trying to connect',
    'Query read timeout',
    'Connection terminated unexpectedly',
    'Connection terminated due to connection timeout',
    'Connection terminated',
    'Client has encountered a connection error and is not queryable',
    'Client was closed and is not queryable'
  ]
  for (const message of messages) {
    t.equal(classifyDbError(new Error(message)), 'unavailable', message)
  }
  t.equal(classifyDbError({ message: 'timeout exceeded when trying to connect' }), 'unavailable', 'a plain object with the message counts too')
})

t.test('an error with neither a known code nor a known message is other', async (t) => {
  t.equal(classifyDbError(new Error('something odd')), 'other')
  t.equal(classifyDbError(new TypeError('Cannot read properties of undefined')), 'other')
  t.equal(classifyDbError({}), 'other')
  t.equal(classifyDbError({ code: 57014 }), 'other', 'a numeric code is not a SQLSTATE')
  t.equal(classifyDbError({ code: null, message: null }), 'other')
})

t.test('non-objects are other and never throw', async (t) => {
  for (const value of [undefined, null, 0, 42, '', 'ECONNREFUSED', 'timeout exceeded when trying to connect', true, Symbol('x'), 10n]) {
    t.equal(classifyDbError(value), 'other', `${typeof value} ${String(value)}`)
  }
})
