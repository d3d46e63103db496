import t from 'tap'
import { TetherError } from '../../src/errors.js'
import { describeFailure, failureFields } from '../../src/failure.js'
import { silentLogger } from '../../src/log.js'
import { ThreadPoolError } from '../../src/threads/thread-pool.js'

const log = silentLogger()

t.test('each kind of failure maps to one contract error, whatever the transport', async (t) => {
  t.match(describeFailure(new TetherError('llm_timeout'), log, {}), { code: 'llm_timeout', status: 504 })
  t.match(describeFailure(new ThreadPoolError('overloaded', 'full', 2), log, {}), { code: 'overloaded', status: 503, retryAfterS: 2 })
  t.match(describeFailure(new ThreadPoolError('pool_stopped', 'stopped'), log, {}), { code: 'shutting_down', status: 503 })
  t.match(describeFailure(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), log, {}), { code: 'db_unavailable', status: 503, retryAfterS: 1 })
  t.match(describeFailure(new Error('boom'), log, {}), { code: 'internal_error', status: 500 })
})

t.test('a stream that has started carries the code, the message and the retry hint in its error frame', async (t) => {
  t.same(failureFields(describeFailure(new TetherError('llm_unavailable', undefined, 3), log, {})), { error: 'llm_unavailable', message: new TetherError('llm_unavailable').message, retry_after_s: 3 })
  t.same(failureFields(describeFailure(new TetherError('llm_timeout'), log, {})), { error: 'llm_timeout', message: new TetherError('llm_timeout').message }, 'no retry hint where HTTP sends no Retry-After')
})
