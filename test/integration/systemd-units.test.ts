/**
 * deploy/systemd/*.service: read as systemd reads them (`systemd-analyze verify`; it must be
 * installed), and the keys that keep Tether up checked against the code they depend on: the
 * watchdog's signal and exit status, the shutdown grace, the compiled entry points.
 */
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { SETTINGS } from '../../src/config.js'
import { WORKER_SETTINGS } from '../../src/llm-worker/config.js'
import { WATCHDOG_EXIT_STATUS, WATCHDOG_SIGNAL } from '../../src/watchdog/shared-state.js'
import { findExecutable } from '../fixtures/broker.js'
import { ROOT } from '../fixtures/promtool.js'

const execFileAsync = promisify(execFile)
const UNITS = ['tether.service', 'tether-worker.service']

/** A unit file as section -> key -> values (a key may repeat, e.g. Environment=). */
function parseUnit (text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>()
  let current: Map<string, string[]> | undefined
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const section = /^\[(.+)\]$/.exec(line)
    if (section !== null) {
      current = new Map()
      sections.set(section[1] as string, current)
      continue
    }
    const eq = line.indexOf('=')
    if (current === undefined || eq < 1) throw new Error(`not a key=value line inside a section: ${line}`)
    const key = line.slice(0, eq).trim()
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  return sections
}

function unit (name: string): { text: string, service: Map<string, string[]>, unit: Map<string, string[]>, install: Map<string, string[]> } {
  const text = readFileSync(join(ROOT, 'deploy/systemd', name), 'utf8')
  const sections = parseUnit(text)
  return { text, service: sections.get('Service') ?? new Map(), unit: sections.get('Unit') ?? new Map(), install: sections.get('Install') ?? new Map() }
}

/** systemd's time span in seconds: "30", "30s", "1min 30s", "500ms". */
function seconds (span: string): number {
  const units: Record<string, number> = { ms: 0.001, s: 1, sec: 1, m: 60, min: 60, h: 3600 }
  let total = 0
  for (const m of span.matchAll(/(\d+(?:\.\d+)?)\s*([a-z]*)/g)) total += Number(m[1]) * (units[m[2] === '' ? 's' : m[2] as string] ?? NaN)
  return total
}

/** systemd's size in bytes: "1G", "512M". */
function bytes (size: string): number {
  const m = /^(\d+)([KMGT]?)$/.exec(size)
  if (m === null) return NaN
  return Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2] === '' ? ' ' : m[2] as string)
}

const one = (section: Map<string, string[]>, key: string): string => section.get(key)?.at(-1) ?? ''
const fallbackMs = (settings: ReadonlyArray<{ env: string, fallback: unknown }>, env: string): number => Number(settings.find((s) => s.env === env)?.fallback)

const analyze = findExecutable('systemd-analyze')
// Debian's `systemd` package provides it (.ci/run installs it when missing).

t.test('systemd-analyze verify accepts both units without a warning', async (t) => {
  if (analyze === undefined) {
    t.fail('systemd-analyze is not installed: apt-get install systemd (bash .ci/run does it)')
    return
  }
  // verify checks that ExecStart's binary exists; node lives at /usr/bin/node on a Debian
  // host (the units' assumption) but may be elsewhere here, so verify copies that point at
  // the node running this test.
  const dir = t.testdir()
  const files = UNITS.map((name) => {
    const file = join(dir, name)
    writeFileSync(file, unit(name).text.replaceAll('/usr/bin/node ', `${process.execPath} `))
    return file
  })
  const { stdout, stderr } = await execFileAsync(analyze as string, ['verify', '--man=no', ...files], { timeout: 60_000 })
    .catch((err: { stdout?: string, stderr?: string, message: string }) => ({ stdout: err.stdout ?? '', stderr: `${err.stderr ?? ''}\n${err.message}` }))
  t.equal(`${stdout}${stderr}`.trim(), '', 'no errors and no warnings (an unknown key or bad value is a warning)')
})

t.test('the gateway unit restarts on failure and on the watchdog\'s exit, but not on a bad config', async (t) => {
  const { service } = unit('tether.service')
  t.equal(one(service, 'Restart'), 'on-failure')
  const forced = one(service, 'RestartForceExitStatus').split(/\s+/)
  t.ok(forced.includes(WATCHDOG_SIGNAL), `RestartForceExitStatus has ${WATCHDOG_SIGNAL} (the watchdog's signal)`)
  t.ok(forced.includes(String(WATCHDOG_EXIT_STATUS)), `RestartForceExitStatus has ${WATCHDOG_EXIT_STATUS} (the same exit through a wrapper)`)
  t.ok(one(service, 'RestartPreventExitStatus').split(/\s+/).includes('78'), 'exit 78 (EX_CONFIG) is not restarted')
  t.ok(seconds(one(service, 'RestartSec')) >= 1, 'RestartSec of a second or more')
})

for (const [name, settings, graceEnv, entry] of [
  ['tether.service', SETTINGS, 'SHUTDOWN_GRACE_MS', 'dist/src/main.js'],
  ['tether-worker.service', WORKER_SETTINGS, 'WORKER_SHUTDOWN_GRACE_MS', 'dist/src/llm-worker/main.js']
] as const) {
  t.test(`${name}: production, environment file, graceful stop, limits for 10,000 sockets`, async (t) => {
    const { service, install, text } = unit(name)
    t.ok((service.get('Environment') ?? []).includes('NODE_ENV=production'), 'Environment=NODE_ENV=production')
    t.match(one(service, 'EnvironmentFile'), /^-?\/etc\/tether\/[a-z-]+\.env$/, 'an EnvironmentFile under /etc/tether')
    t.equal(one(service, 'ExecStart'), `/usr/bin/node ${entry}`, `runs ${entry}`)
    t.ok(existsSync(join(ROOT, entry.replace(/^dist\//, '').replace(/\.js$/, '.ts'))), `whose source ${entry.replace(/^dist\//, '').replace(/\.js$/, '.ts')} exists`)
    t.equal(one(service, 'KillSignal'), 'SIGTERM')
    const grace = fallbackMs(settings, graceEnv) / 1000
    const stop = seconds(one(service, 'TimeoutStopSec'))
    t.ok(stop > grace + 5, `TimeoutStopSec (${stop} s) exceeds ${graceEnv} (${grace} s) with room for closing MQTT and the database`)
    t.ok(Number(one(service, 'LimitNOFILE')) >= 16_384, `LimitNOFILE (${one(service, 'LimitNOFILE')}) is far above the default 1,024`)
    t.ok(bytes(one(service, 'MemoryMax')) >= 256 * 1024 ** 2, `MemoryMax (${one(service, 'MemoryMax')}) is set`)
    t.ok(Number(one(service, 'TasksMax')) >= 64, `TasksMax (${one(service, 'TasksMax')}) leaves room for worker threads`)
    t.notOk(['', 'root'].includes(one(service, 'User')), `runs as a system user (${one(service, 'User')})`)
    t.equal(one(install, 'WantedBy'), 'multi-user.target')
    const example = readFileSync(join(ROOT, 'deploy/systemd', `${name.replace('.service', '')}.env.example`), 'utf8')
    const known = new Set<string>(settings.map((s) => s.env))
    const listed = [...example.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1] as string)
    t.same(listed.filter((v) => !known.has(v)), [], `the example environment file names only variables ${name} reads`)
    t.notMatch(text, /^\s*Environment=.*(SECRET|PASSWORD|KEY)=/m, 'no secret in the unit itself')
  })
}

t.test('the gateway unit\'s LimitNOFILE fits 10,000 sockets', async (t) => {
  t.ok(Number(one(unit('tether.service').service, 'LimitNOFILE')) >= 20_000, '10,000 client sockets plus as many spare')
})
