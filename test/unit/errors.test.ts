import { readFileSync } from 'node:fs'
import t from 'tap'
import { ERRORS, errorBody, TetherError } from '../../src/errors.js'

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8')
const documented = new Map<string, number>()
for (const m of doc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)) documented.set(m[1] as string, Number(m[2]))

t.test('every catalogued error code is documented with its status', async (t) => {
  for (const [code, entry] of Object.entries(ERRORS)) {
    t.equal(documented.get(code), entry.status, `${code} documented as ${entry.status}`)
  }
})

t.test('docs/errors.md documents no code that the catalogue lacks', async (t) => {
  for (const code of documented.keys()) t.ok(code in ERRORS, `${code} is in src/errors.ts`)
})

t.test('an error body has the contract shape', async (t) => {
  t.same(errorBody('llm_timeout', 'r1'), { error: 'llm_timeout', message: ERRORS.llm_timeout.message, request_id: 'r1' })
  const err = new TetherError('too_many_requests', undefined, 3)
  t.equal(err.status, 429)
  t.equal(err.retryAfterS, 3)
})

t.test('a TetherError is an answer: it carries no stack frames, and leaves the stack limit as it was', async (t) => {
  const before = Error.stackTraceLimit
  const err = new TetherError('cancelled')
  t.equal(err.stack?.split('\n').length, 1, 'the stack is the header line only')
  t.equal(Error.stackTraceLimit, before)
  t.ok((new Error('bug').stack?.split('\n').length ?? 0) > 1, 'other errors still capture their frames')
})
