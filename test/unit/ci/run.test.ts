// Pieces of .ci/run, run through bash with the script sourced (sourcing defines, never runs).
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const script = fileURLToPath(new URL('../../../.ci/run', import.meta.url))
const execFileAsync = promisify(execFile)

// Should sourcing ever run main() again, these stand-ins fail fast instead of reinstalling
// node_modules under the running tests and recursing into npm test.
const TRIPWIRES = ['npm', 'apt-get', 'mosquitto', 'pg_ctlcluster']
  .map((command) => `${command} () { echo "${command} must not run when sourced" >&2; exit 99; }`)
  .join('\n')

/** Runs `body` in bash with .ci/run sourced; extra arguments are $1, $2, ... */
function run (body: string, ...args: string[]): Promise<{ stdout: string }> {
  return execFileAsync('bash', ['-c', `${TRIPWIRES}\nsource "$0"\n${body}`, script, ...args], { timeout: 10_000 })
}

async function summarize (dir: string, tapOutput: string | undefined): Promise<string> {
  const log = join(dir, 'npm-test.log')
  if (tapOutput !== undefined) writeFileSync(log, tapOutput)
  const { stdout } = await run('summarize "$1"', log)
  return stdout
}

t.test('the closing line counts passes and failures from tap\'s final summary', async (t) => {
  const dir = t.testdir()
  const output = [
    'TAP version 14',
    '    # { total: 3, pass: 3 }',
    'not ok 1 - test/unit/x.test.ts',
    '# { total: 12, pass: 10, fail: 1, todo: 1 }',
    '# time=12ms',
    ''
  ].join('\n')
  t.equal(await summarize(dir, output), 'tests: 10 passed, 1 failed\n')
})

t.test('two runs in one log (npm test, then the broker matrix) are added up', async (t) => {
  const output = ['# { total: 12, pass: 10, fail: 2 }', '    # { total: 5, pass: 5 }', '# { total: 15, pass: 14, fail: 1 }', ''].join('\n')
  t.equal(await summarize(t.testdir(), output), 'tests: 24 passed, 3 failed\n')
})

t.test('a summary without failures reads as 0 failed', async (t) => {
  t.equal(await summarize(t.testdir(), '# { total: 12, pass: 12 }\n'), 'tests: 12 passed, 0 failed\n')
})

t.test('colour codes around the summary are ignored', async (t) => {
  t.equal(await summarize(t.testdir(), '\u001b[31m# { total: 2, fail: 2 }\u001b[0m\n'), 'tests: 0 passed, 2 failed\n')
})

t.test('no summary (tap never ran) and no log at all both read as 0 and 0', async (t) => {
  t.equal(await summarize(t.testdir(), 'npm ERR! missing script: test\n'), 'tests: 0 passed, 0 failed\n')
  t.equal(await summarize(t.testdir(), undefined), 'tests: 0 passed, 0 failed\n')
})

t.test('the failures listing names every failed test and its diagnostics, and nothing that passed', async (t) => {
  const dir = t.testdir()
  const log = join(dir, 'npm-test.log')
  writeFileSync(log, [
    'TAP version 14',
    '# Subtest: test/a.test.ts',
    '    # Subtest: adds',
    '        ok 1 - fine',
    '        \u001b[31mnot ok 2 - should be equal\u001b[0m',
    '          ---',
    '          found: 1',
    '          wanted: 2',
    '          ...',
    '        1..2',
    '    not ok 1 - adds # time=3ms',
    '    1..1',
    'not ok 1 - test/a.test.ts # time=9ms',
    'ok 2 - test/b.test.ts # time=1ms',
    '# { total: 3, pass: 1, fail: 1 }',
    ''
  ].join('\n'))
  const { stdout } = await run('list_failures "$1"', log)
  const lines = stdout.trimEnd().split('\n')
  t.match(lines[0], /^failed tests/)
  t.ok(lines.includes('        not ok 2 - should be equal'), 'the failed assertion, colours stripped')
  t.ok(lines.includes('          found: 1') && lines.includes('          wanted: 2'), 'with its diagnostics')
  t.ok(lines.includes('not ok 1 - test/a.test.ts # time=9ms'), 'and the file it is in')
  t.notOk(stdout.includes('ok 1 - fine') || stdout.includes('test/b.test.ts'), 'nothing that passed')
})

t.test('a log without failures, and no log at all, list nothing', async (t) => {
  const dir = t.testdir()
  const log = join(dir, 'npm-test.log')
  writeFileSync(log, 'ok 1 - test/b.test.ts\n# { total: 1, pass: 1 }\n')
  t.equal((await run('list_failures "$1"', log)).stdout, '')
  t.equal((await run('list_failures "$1"', join(dir, 'missing.log'))).stdout, '')
})

t.test('sourcing the script defines its functions and runs nothing', async (t) => {
  const { stdout } = await run('type -t main summarize list_failures listening wait_for_port')
  t.equal(stdout, 'function\nfunction\nfunction\nfunction\nfunction\n')
})

t.test('listening tells an open port from a closed one', async (t) => {
  const server = net.createServer().listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const { port } = server.address() as net.AddressInfo
  const probe = (p: number): Promise<boolean> =>
    run('listening 127.0.0.1 "$1"', String(p)).then(() => true, () => false)
  t.ok(await probe(port), 'open')
  await new Promise((resolve) => server.close(resolve))
  t.notOk(await probe(port), 'closed')
})
