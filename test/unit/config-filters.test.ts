import t from 'tap'
import { ConfigError, loadConfig, parseContentFilters, unknownVariables } from '../../src/config.js'
import { spawnTs, waitExit } from '../fixtures/run-ts.js'

function problemOf (env: Record<string, string>): string {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('expected a ConfigError')
}

const filters = (json: unknown): unknown => loadConfig({ CONTENT_FILTERS: JSON.stringify(json) }).contentFilters

t.test('without CONTENT_FILTERS there is no screening; the budgets and deadline have their documented defaults', async (t) => {
  const c = loadConfig({})
  t.same(c.contentFilters, [])
  t.equal(c.contentFilterTimeoutMs, 200)
  t.equal(c.historyMaxTokens, 3000)
  t.same(loadConfig({ CONTENT_FILTERS: '' }).contentFilters, [], 'empty is unset')
  t.same(filters([]), [])
})

t.test('a bare string is a pattern without flags; "/source/flags" carries flags', async (t) => {
  t.same(filters(['secret\\s+plan', '/Secret Plan/i', '/^a.b$/ms', '/(?:x)/']), [
    { source: 'secret\\s+plan', flags: '' },
    { source: 'Secret Plan', flags: 'i' },
    { source: '^a.b$', flags: 'ms' },
    { source: '(?:x)', flags: '' }
  ])
  t.same(filters(['/a\\/b/u']), [{ source: 'a\\/b', flags: 'u' }], 'escaped slashes stay in the source')
  t.same(filters(['/only a leading slash']), [{ source: '/only a leading slash', flags: '' }])
  t.ok(Object.isFrozen(loadConfig({ CONTENT_FILTERS: '["x"]' }).contentFilters))
})

t.test('a pattern that backtracks catastrophically is accepted: compiling does not run it', async (t) => {
  t.same(filters(['(a+)+$']), [{ source: '(a+)+$', flags: '' }])
})

t.test('an invalid regular expression is one line naming CONTENT_FILTERS, the pattern and why', async (t) => {
  const line = problemOf({ CONTENT_FILTERS: '["fine", "(a+"]' })
  t.match(line, /^config: CONTENT_FILTERS pattern 1 \("\(a\+"\) is not a valid regular expression: .*Unterminated group.* \(example: CONTENT_FILTERS=/)
  t.notOk(line.includes('\n'))
  t.match(problemOf({ CONTENT_FILTERS: '["/x/q"]' }), /pattern 0 \("\/x\/q"\) is not a valid regular expression: .*flags/i)
  t.match(problemOf({ CONTENT_FILTERS: '["a\\n[b"]' }), /^config: CONTENT_FILTERS pattern 0 \("a\\n\[b"\)/, 'a newline in the pattern is quoted, so still one line')
  t.notOk(problemOf({ CONTENT_FILTERS: '["a\\n[b"]' }).includes('\n'))
})

t.test('flags that make a filter stateful or anchored, and empty patterns, are refused', async (t) => {
  t.match(problemOf({ CONTENT_FILTERS: '["/x/g"]' }), /pattern 0 \("\/x\/g"\) has the flag "g"; filters take only i, m, s, u and v/)
  t.match(problemOf({ CONTENT_FILTERS: '["/x/iy"]' }), /has the flag "y"/)
  t.match(problemOf({ CONTENT_FILTERS: '["ok", ""]' }), /pattern 1 \(""\) is empty and would refuse every message/)
  t.match(problemOf({ CONTENT_FILTERS: '["//i"]' }), /pattern 0 \("\/\/i"\) is empty/)
})

t.test('anything but a JSON array of strings is refused', async (t) => {
  t.match(problemOf({ CONTENT_FILTERS: 'secret' }), /^config: CONTENT_FILTERS must be a JSON array of strings; it does not parse/)
  t.match(problemOf({ CONTENT_FILTERS: '{"a":1}' }), /CONTENT_FILTERS must be a JSON array of strings/)
  t.match(problemOf({ CONTENT_FILTERS: '["a", 1]' }), /CONTENT_FILTERS must be a JSON array of strings/)
  t.ok('problem' in parseContentFilters('"just a string"'))
})

t.test('HISTORY_MAX_TOKENS takes 0 (off) and whole numbers; CONTENT_FILTER_TIMEOUT_MS is bounded', async (t) => {
  t.equal(loadConfig({ HISTORY_MAX_TOKENS: '0' }).historyMaxTokens, 0)
  t.equal(loadConfig({ HISTORY_MAX_TOKENS: '128000' }).historyMaxTokens, 128_000)
  t.match(problemOf({ HISTORY_MAX_TOKENS: '-1' }), /HISTORY_MAX_TOKENS must be between 0 and/)
  t.equal(loadConfig({ CONTENT_FILTER_TIMEOUT_MS: '50' }).contentFilterTimeoutMs, 50)
  t.match(problemOf({ CONTENT_FILTER_TIMEOUT_MS: '0' }), /CONTENT_FILTER_TIMEOUT_MS must be between 10 and/)
})

t.test('a misspelt CONTENT_ variable is reported as a likely typo', async (t) => {
  t.same(unknownVariables({ CONTENT_FILTER: '["x"]', CONTENT_FILTERS: '["x"]', CONTENT_FILTER_TIMEOUT_MS: '200' }), ['CONTENT_FILTER'])
})

t.test('the server refuses to start on an invalid filter: exit 78, one line on stderr, no stack', async (t) => {
  const child = spawnTs('src/main.ts', { CONTENT_FILTERS: '["ok", "(a+"]', LOG_LEVEL: 'silent' })
  const exit = await waitExit(child, 30_000)
  t.equal(exit.code, 78)
  const lines = exit.stderr.trim().split('\n')
  t.equal(lines.length, 1, 'exactly one line on stderr')
  t.match(lines[0], /^config: CONTENT_FILTERS pattern 1 \("\(a\+"\) is not a valid regular expression/)
})
