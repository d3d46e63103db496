import t from 'tap'
import { ConfigError, defineConfig, REQUIRED, settingOf } from '../../../src/settings/kernel.js'
import { int } from '../../../src/settings/parsers.js'

interface C { port: number, group: string | undefined, url: string }
const s = settingOf<C>()
const definition = defineConfig<C>({
  settings: [
    s({ env: 'APP_PORT', key: 'port', fallback: 80, example: '80', parse: int(1, 65535), doc: 'Port.', formerly: ['OLD_PORT'] }),
    s({ env: 'APP_GROUP', key: 'group', fallback: 'g', example: 'g', parse: (raw) => raw, emptyMeansOff: true, doc: 'Group.' }),
    s({ env: 'APP_URL', key: 'url', fallback: REQUIRED, example: 'x://y', parse: (raw) => raw, doc: 'URL.' })
  ],
  ours: /^APP_/,
  ignore: (name) => name === 'APP_TEST_ONLY'
})

t.test('a required setting that is unset or empty is one ConfigError line naming it', async (t) => {
  t.throws(() => definition.load({}), new ConfigError('APP_URL', 'is required', 'x://y'))
  t.throws(() => definition.load({ APP_URL: '' }), { message: 'config: APP_URL is required (example: APP_URL=x://y)' })
})

t.test('empty means the default, except where it means off', async (t) => {
  const c = definition.load({ APP_URL: 'u', APP_PORT: '', APP_GROUP: '' })
  t.equal(c.port, 80)
  t.equal(c.group, undefined)
  t.equal(definition.load({ APP_URL: 'u' }).group, 'g')
  t.ok(Object.isFrozen(c))
})

t.test('a former name is read when the new one is unset, reported as deprecated, and never a typo', async (t) => {
  const env = { APP_URL: 'u', OLD_PORT: '81', APP_PROT: '1', APP_TEST_ONLY: '1' }
  t.equal(definition.load(env).port, 81)
  t.same(definition.deprecatedVariables(env), [{ name: 'OLD_PORT', replacement: 'APP_PORT', ignored: false }])
  t.same(definition.unknownVariables(env), ['APP_PROT'])
  t.equal(definition.load({ ...env, APP_PORT: '82' }).port, 82, 'the new name wins')
  t.same(definition.deprecatedVariables({ ...env, APP_PORT: '82' }), [{ name: 'OLD_PORT', replacement: 'APP_PORT', ignored: true }], 'and the former one is reported as ignored')
  t.equal(definition.load({ ...env, APP_PORT: '' }).port, 81, 'an empty new name does not hide a set former one')
  t.throws(() => definition.load({ APP_URL: 'u', OLD_PORT: 'x' }), { message: /^config: OLD_PORT must be a whole number, got "x" \(example: APP_PORT=80\)$/ }, 'a bad former value is named as set, the example under the new name')
})
