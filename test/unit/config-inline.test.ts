import t from 'tap'
import { ConfigError, loadConfig, unknownVariables } from '../../src/config.js'
import { spawnTs, waitExit } from '../fixtures/run-ts.js'

const SECRET = 'x'.repeat(32)

t.test('WORKER_INLINE is off by default and takes the usual booleans', async (t) => {
  t.equal(loadConfig({}).workerInline, false)
  t.equal(loadConfig({ WORKER_INLINE: '1' }).workerInline, true)
  t.equal(loadConfig({ WORKER_INLINE: 'off' }).workerInline, false)
  t.throws(() => loadConfig({ WORKER_INLINE: 'sometimes' }), { name: 'ConfigError', variable: 'WORKER_INLINE' })
  t.same(unknownVariables({ WORKER_INLINE: '1' }), [], 'a known variable, not a typo')
})

t.test('production refuses WORKER_INLINE with one line naming it', async (t) => {
  const env = { NODE_ENV: 'production', AUTH_SECRET: SECRET, WORKER_INLINE: '1' }
  t.throws(() => loadConfig(env), ConfigError)
  t.throws(() => loadConfig(env), { variable: 'WORKER_INLINE', message: /^config: WORKER_INLINE must not be set when NODE_ENV=production .*\(example: WORKER_INLINE=0\)$/ })
  t.equal(loadConfig({ ...env, WORKER_INLINE: '0' }).workerInline, false, 'off is fine in production')
})

t.test('the server refuses to start in production with WORKER_INLINE: exit 78, one line, no stack', async (t) => {
  const child = spawnTs('src/main.ts', { NODE_ENV: 'production', AUTH_SECRET: SECRET, WORKER_INLINE: '1', LOG_LEVEL: 'silent' })
  const exit = await waitExit(child, 30_000)
  t.equal(exit.code, 78)
  const lines = exit.stderr.trim().split('\n')
  t.equal(lines.length, 1, exit.stderr)
  t.match(lines[0], /WORKER_INLINE must not be set when NODE_ENV=production/)
})
