import t from 'tap'
import { ConfigError, loadConfig, unknownVariables } from '../../src/config.js'
import { spawnTs, waitExit } from '../fixtures/run-ts.js'

const SECRET = 'x'.repeat(32)

t.test('THREAD_INLINE is off by default and takes the usual booleans', async (t) => {
  t.equal(loadConfig({}).threadInline, false)
  t.equal(loadConfig({ THREAD_INLINE: '1' }).threadInline, true)
  t.equal(loadConfig({ THREAD_INLINE: 'off' }).threadInline, false)
  t.throws(() => loadConfig({ THREAD_INLINE: 'sometimes' }), { name: 'ConfigError', variable: 'THREAD_INLINE' })
  t.same(unknownVariables({ THREAD_INLINE: '1' }), [], 'a known variable, not a typo')
})

t.test('production refuses THREAD_INLINE with one line naming it', async (t) => {
  const env = { NODE_ENV: 'production', AUTH_SECRET: SECRET, THREAD_INLINE: '1' }
  t.throws(() => loadConfig(env), ConfigError)
  t.throws(() => loadConfig(env), { variable: 'THREAD_INLINE', message: /^config: THREAD_INLINE must not be set when NODE_ENV=production .*\(example: THREAD_INLINE=0\)$/ })
  t.equal(loadConfig({ ...env, THREAD_INLINE: '0' }).threadInline, false, 'off is fine in production')
  t.throws(() => loadConfig({ NODE_ENV: 'production', AUTH_SECRET: SECRET, WORKER_INLINE: '1' }), { variable: 'WORKER_INLINE', message: /^config: WORKER_INLINE must not be set .*\(example: THREAD_INLINE=0\)$/ }, 'under its former name, the name that was set')
})

t.test('the server refuses to start in production with THREAD_INLINE: exit 78, one line, no stack', async (t) => {
  const child = spawnTs('src/main.ts', { NODE_ENV: 'production', AUTH_SECRET: SECRET, THREAD_INLINE: '1', LOG_LEVEL: 'silent' })
  const exit = await waitExit(child, 30_000)
  t.equal(exit.code, 78)
  const lines = exit.stderr.trim().split('\n')
  t.equal(lines.length, 1, exit.stderr)
  t.match(lines[0], /THREAD_INLINE must not be set when NODE_ENV=production/)
})
