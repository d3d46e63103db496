import t from 'tap'
import { spawnTs, waitExit, waitForLine } from '../fixtures/run-ts.js'
import { uwsBinding } from '../../src/uws-native.js'

t.test('the native uWebSockets.js binary is what loads on this machine', async (t) => {
  const b = uwsBinding()
  t.equal(b.native, true)
  t.match(b.file, /uws_linux_x64_\d+\.node$/)
})

t.test('the JavaScript fallback is detected as not native', async (t) => {
  const probe = spawnTs('test/fixtures/uws-binding.ts', { UWS_USE_FALLBACK: '1' })
  const out = await waitExit(probe, 20_000)
  t.equal(out.code, 0, out.stderr)
  t.same(JSON.parse(out.stdout.trim().split('\n').pop() as string), { native: false, file: null })
})

t.test('the server logs the fallback as an error at start-up', async (t) => {
  // An unreachable DATABASE_URL: the check happens before the database is touched, and no
  // embedded server is started that the kill below could orphan.
  const child = spawnTs('src/main.ts', { UWS_USE_FALLBACK: '1', PORT: '0', HOST: '127.0.0.1', EMBEDDED_MQTT_PORT: '0', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', DATA_DIR: '/tmp' })
  t.teardown(() => { child.kill('SIGKILL') })
  const line = await waitForLine(child, /"msg":"[^"]*FALLBACK/, 20_000)
  t.match(JSON.parse(line), { level: 50, msg: /slow JavaScript FALLBACK/ })
})
