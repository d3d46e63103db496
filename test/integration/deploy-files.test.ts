/**
 * The deployment files, checked with what runs without Docker: promtool for the Prometheus
 * configuration and the dashboards' PromQL, YAML parsing for Compose and Grafana's
 * provisioning, and cross-references: every file a config names exists (through Compose's
 * bind mounts where the path is a container's), every service a config names is a Compose
 * service, and every variable a service is given is one its program reads.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, posix } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { SETTINGS } from '../../src/config.js'
import { WORKER_SETTINGS } from '../../src/llm-worker/config.js'
import { findExecutable } from '../fixtures/broker.js'
import { PROMTOOL_MISSING, ROOT, described, promtool, promtoolPath } from '../fixtures/promtool.js'

interface Service {
  profiles?: string[]
  build?: { context: string, dockerfile?: string } | string
  image?: string
  command?: string[] | string
  entrypoint?: string[] | string
  environment?: Record<string, string>
  volumes?: string[]
  depends_on?: Record<string, { condition: string }>
  healthcheck?: { test?: string[], disable?: boolean }
  restart?: string
  stop_grace_period?: string
  ports?: string[]
}
interface Compose { services: Record<string, Service>, volumes?: Record<string, unknown> }

function read (path: string): string { return readFileSync(join(ROOT, path), 'utf8') }
// merge: the cluster profile's services share their settings through `<<:` merge keys, as Compose reads them.
function yaml<T> (path: string): T { return parse(read(path), { merge: true }) as T }

const compose = yaml<Compose>('docker-compose.yml')
const services = compose.services
const defaultOf = (env: string): unknown => SETTINGS.find((s) => s.env === env)?.fallback

/** The host path (relative to the repository) behind a container path, through a service's bind mounts. */
function hostPath (service: Service, containerPath: string): string | undefined {
  let best: { source: string, target: string } | undefined
  for (const volume of service.volumes ?? []) {
    const [source, target] = volume.split(':') as [string, string]
    if (!source.startsWith('.')) continue
    const inside = containerPath === target || containerPath.startsWith(target.endsWith('/') ? target : `${target}/`)
    if (inside && (best === undefined || target.length > best.target.length)) best = { source, target }
  }
  if (best === undefined) return undefined
  return posix.join(best.source, posix.relative(best.target, containerPath))
}

/** Whether a container path lies on one of the service's volumes (named or bind). */
function onVolume (service: Service, containerPath: string): boolean {
  return (service.volumes ?? []).some((v) => {
    const target = (v.split(':')[1] ?? '').replace(/\/$/, '')
    return containerPath === target || containerPath.startsWith(`${target}/`)
  })
}

function seconds (duration: string | undefined): number {
  const m = /^(\d+)(ms|s|m)$/.exec(duration ?? '')
  if (m === null) return 10 // Compose's default stop_grace_period
  const n = Number(m[1])
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n
}

t.test('promtool accepts prometheus.yml (and the rule files it loads)', async (t) => {
  if (promtoolPath() === undefined) { t.fail(PROMTOOL_MISSING); return }
  const result = await promtool(['check', 'config', 'deploy/prometheus/prometheus.yml'])
  t.equal(result.code, 0, described('promtool check config deploy/prometheus/prometheus.yml', result))
  t.match(result.stdout, /SUCCESS: 1 rule files found/, 'alerts.yml is loaded')
})

t.test('every dashboard query is valid PromQL to promtool', async (t) => {
  if (promtoolPath() === undefined) { t.fail(PROMTOOL_MISSING); return }
  // Grafana's variables replaced the way Grafana would before sending the query.
  const dashboard = JSON.parse(read('grafana/dashboards/tether-overview.json')) as {
    panels: Array<{ title: string, targets?: Array<{ expr?: string }> }>
    annotations: { list: Array<{ expr?: string }> }
  }
  const exprs = [
    ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr)),
    ...dashboard.annotations.list.map((a) => a.expr)
  ].filter((e): e is string => e !== undefined)
  const rules = exprs.map((expr, i) => ({
    record: `dashboard:query_${i}`,
    expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$instance', '.*')
  }))
  const file = join(t.testdir(), 'dashboard-queries.yml')
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }))
  const result = await promtool(['check', 'rules', file])
  t.equal(result.code, 0, described(`promtool check rules on the ${rules.length} dashboard queries`, result))
})

t.test('Compose has every part, each with a restart policy and a health check', async (t) => {
  for (const name of ['tether', 'worker', 'mosquitto', 'postgres', 'prometheus', 'grafana']) t.ok(services[name], `service ${name}`)
  for (const [name, s] of Object.entries(services)) {
    const oneShot = s.restart === 'no'
    if (oneShot) t.ok(Object.values(services).some((o) => o.depends_on?.[name]?.condition === 'service_completed_successfully'), `${name} runs once, before the service that needs it`)
    else t.ok(s.restart === 'unless-stopped' || s.restart === 'always', `${name} restarts by itself (restart: ${s.restart ?? 'unset'})`)
    if (!oneShot && s.healthcheck?.disable !== true) t.ok((s.healthcheck?.test ?? []).length > 0, `${name} has a health check`)
    if (s.healthcheck?.disable === true) t.same(s.command, ['node', 'dist/src/llm-worker/main.js'], `${name}, without a health check, is a worker (it serves no HTTP)`)
    for (const dep of Object.keys(s.depends_on ?? {})) t.ok(services[dep], `${name} depends on ${dep}, a service`)
    for (const volume of s.volumes ?? []) {
      const source = volume.split(':')[0] as string
      if (source.startsWith('.') || source.startsWith('/')) continue
      t.ok(compose.volumes !== undefined && source in compose.volumes, `${name}'s volume ${source} is declared`)
    }
  }
  t.equal(services.worker?.healthcheck?.disable, true, 'the worker turns off the image\'s /livez check (it serves no HTTP)')
})

t.test('every file Compose mounts or builds from exists', async (t) => {
  for (const [name, s] of Object.entries(services)) {
    if (s.build !== undefined) {
      const build = typeof s.build === 'string' ? { context: s.build } : s.build
      t.ok(existsSync(join(ROOT, build.context, build.dockerfile ?? 'Dockerfile')), `${name} builds from an existing Dockerfile`)
    }
    for (const volume of s.volumes ?? []) {
      const source = volume.split(':')[0] as string
      if (source.startsWith('.')) t.ok(existsSync(join(ROOT, source)), `${name} mounts ${source}, which exists`)
    }
  }
})

t.test('Tether in Compose: production, a secret from .env, only variables src/config.ts reads', async (t) => {
  const tether = services.tether as Service
  const env = tether.environment ?? {}
  const known = new Set<string>(SETTINGS.map((s) => s.env))
  t.same(Object.keys(env).filter((k) => !known.has(k)), [], 'every variable is in SETTINGS')
  t.equal(env.NODE_ENV, 'production')
  t.match(env.AUTH_SECRET ?? '', /^\$\{AUTH_SECRET:\?[^}]+\}$/, 'AUTH_SECRET comes from .env and is required')
  t.match(env.DATABASE_URL ?? '', /@postgres:5432\//, 'the database is the postgres service')
  t.match(env.MQTT_URL ?? '', /@mosquitto:1883$/, 'the broker is the mosquitto service')
  const grace = Number(env.SHUTDOWN_GRACE_MS ?? defaultOf('SHUTDOWN_GRACE_MS')) / 1000
  t.ok(seconds(tether.stop_grace_period) > grace, `stop_grace_period (${tether.stop_grace_period ?? '10s'}) exceeds SHUTDOWN_GRACE_MS (${grace} s)`)
  const check = (tether.healthcheck?.test ?? []).join(' ')
  t.match(check, /\/(readyz|livez)/, 'the health check asks /readyz or /livez')
  t.match(check, new RegExp(`:${env.PORT ?? '8000'}/`), 'on the port Tether listens on')
  t.ok((tether.ports ?? []).some((p) => p.endsWith(`:${env.PORT ?? '8000'}`)), 'that port is published')
  t.ok((tether.ports ?? []).every((p) => p.startsWith('127.0.0.1:')), 'on loopback only: clients come through the proxy, /metrics stays private')
})

t.test('the worker in Compose runs the reference worker with only variables it reads', async (t) => {
  const worker = services.worker as Service
  const known = new Set<string>(WORKER_SETTINGS.map((s) => s.env))
  t.same(Object.keys(worker.environment ?? {}).filter((k) => !known.has(k)), [], 'every variable is in WORKER_SETTINGS')
  t.same(worker.command, ['node', 'dist/src/llm-worker/main.js'])
  t.ok(existsSync(join(ROOT, 'src/llm-worker/main.ts')), 'whose source exists')
  t.match(worker.environment?.MQTT_URL ?? '', /@mosquitto:1883$/, 'on the mosquitto service')
  t.notOk(worker.environment?.MQTT_URL?.includes('tether-gateway'), 'with its own broker account')
})

t.test('every ${VARIABLE} Compose reads is in deploy/compose.env.example', async (t) => {
  const text = read('docker-compose.yml')
  // $$ is an escaped dollar, passed to the container's shell.
  const used = new Set([...text.matchAll(/(?<!\$)\$\{([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1] as string))
  const example = read('deploy/compose.env.example')
  const listed = new Set([...example.matchAll(/^#?([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1] as string))
  t.same([...used].filter((v) => !listed.has(v)), [], 'used but not in the example')
  t.same([...listed].filter((v) => !used.has(v)), [], 'in the example but unused')
  t.match(read('.gitignore'), /^\.env$/m, '.env is ignored by git')
  t.match(read('.dockerignore'), /^\.env$/m, '.env is kept out of the build context')
})

t.test('Mosquitto in Compose runs the repository config, and its files are on volumes', async (t) => {
  const mosquitto = services.mosquitto as Service
  const command = Array.isArray(mosquitto.command) ? mosquitto.command : []
  const configPath = command[command.indexOf('-c') + 1] ?? ''
  t.equal(hostPath(mosquitto, configPath), 'deploy/mosquitto/mosquitto.conf', `-c ${configPath} is deploy/mosquitto/mosquitto.conf`)
  const conf = read('deploy/mosquitto/mosquitto.conf')
  const passwordFile = /^password_file\s+(\S+)/m.exec(conf)?.[1] ?? ''
  const persistence = /^persistence_location\s+(\S+)/m.exec(conf)?.[1] ?? ''
  t.ok(onVolume(mosquitto, passwordFile), `password_file ${passwordFile} is on a volume`)
  t.ok(onVolume(mosquitto, persistence.replace(/\/$/, '')), `persistence_location ${persistence} is on a volume`)
  const aclFile = /^acl_file\s+(\S+)/m.exec(conf)?.[1] ?? ''
  t.equal(hostPath(mosquitto, aclFile), 'deploy/mosquitto/acl', `acl_file ${aclFile} is deploy/mosquitto/acl`)
  const init = services['mosquitto-passwd'] as Service
  t.ok(init !== undefined, 'a service writes the password file')
  t.match(JSON.stringify(init.command), passwordFile, 'to the path mosquitto.conf reads')
  t.equal(mosquitto.depends_on?.['mosquitto-passwd']?.condition, 'service_completed_successfully', 'before the broker starts')
})

t.test('Prometheus in Compose loads deploy/prometheus/prometheus.yml, whose rules and targets exist', async (t) => {
  const prometheus = services.prometheus as Service
  const flags = Array.isArray(prometheus.command) ? prometheus.command : []
  const configPath = flags.find((f) => f.startsWith('--config.file='))?.slice('--config.file='.length) ?? ''
  const configHost = hostPath(prometheus, configPath)
  t.equal(configHost, 'deploy/prometheus/prometheus.yml', `--config.file=${configPath} is deploy/prometheus/prometheus.yml`)
  const config = yaml<{ rule_files: string[], scrape_configs: Array<{ job_name: string, static_configs: Array<{ targets: string[] }> }> }>('deploy/prometheus/prometheus.yml')
  for (const rules of config.rule_files) {
    t.ok(existsSync(join(ROOT, 'deploy/prometheus', rules)), `rule file ${rules} exists next to prometheus.yml`)
  }
  const job = config.scrape_configs.find((j) => j.job_name === 'tether')
  t.ok(job, 'a scrape job named tether (the alerts select job="tether")')
  const port = services.tether?.environment?.PORT ?? '8000'
  for (const target of job?.static_configs.flatMap((c) => c.targets) ?? []) {
    const [host, targetPort] = target.split(':')
    t.ok(services[host as string], `target ${target} is a Compose service`)
    t.equal(targetPort, port, `target ${target} is on Tether's port`)
  }
})

t.test('Grafana in Compose is provisioned with the Prometheus data source and the dashboards', async (t) => {
  const grafana = services.grafana as Service
  const provisioning = hostPath(grafana, '/etc/grafana/provisioning')
  t.equal(provisioning, 'grafana/provisioning', 'provisioning is grafana/provisioning')
  const datasources = yaml<{ apiVersion: number, datasources: Array<{ uid: string, type: string, url: string }> }>('grafana/provisioning/datasources/prometheus.yml')
  t.equal(datasources.apiVersion, 1)
  const prom = datasources.datasources.find((d) => d.type === 'prometheus')
  const url = new URL(prom?.url ?? 'http://invalid')
  t.ok(services[url.hostname], `the data source's host ${url.hostname} is a Compose service`)
  t.equal(url.port, '9090', 'on Prometheus\'s port')
  const providers = yaml<{ apiVersion: number, providers: Array<{ type: string, options: { path: string } }> }>('grafana/provisioning/dashboards/tether.yml')
  t.equal(providers.apiVersion, 1)
  for (const provider of providers.providers) {
    const dir = hostPath(grafana, provider.options.path)
    t.ok(dir !== undefined && statSync(join(ROOT, dir)).isDirectory(), `provider path ${provider.options.path} is a mounted directory (${dir ?? 'not mounted'})`)
    if (dir !== undefined) t.ok(existsSync(join(ROOT, dir, 'tether-overview.json')), 'holding tether-overview.json')
  }
  const home = grafana.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH
  if (home !== undefined) {
    const file = hostPath(grafana, home)
    t.ok(file !== undefined && existsSync(join(ROOT, file)), `the home dashboard ${home} is a mounted file`)
  }
})

t.test('the Dockerfile: multi-stage, npm ci, build, dev dependencies pruned, non-root, the compiled entry', async (t) => {
  const dockerfile = read('Dockerfile')
  const stages = dockerfile.split(/^FROM /m).slice(1)
  t.ok(stages.length >= 2, 'at least a build and a runtime stage')
  const build = stages.slice(0, -1).join('')
  const runtime = stages.at(-1) ?? ''
  t.match(build, /^RUN npm ci\b/m, 'npm ci')
  t.match(build, /npm run build/, 'npm run build')
  t.match(build, /npm prune --omit=dev/, 'dev dependencies pruned')
  const user = /^USER (\S+)/m.exec(runtime)?.[1]
  t.ok(user !== undefined && user !== 'root' && user !== '0', `the runtime stage runs as a non-root user (${user ?? 'none'})`)
  t.match(runtime, /^CMD \["node", "dist\/src\/main\.js"\]/m, 'runs node dist/src/main.js')
  t.match(runtime, /COPY --from=build \/app\/package\.json/, 'package.json ("type": "module") is in the image')
  const tsconfig = JSON.parse(read('tsconfig.json')) as { compilerOptions: { outDir: string, rootDir: string } }
  t.equal(tsconfig.compilerOptions.outDir, 'dist')
  t.equal(tsconfig.compilerOptions.rootDir, '.', 'so src/main.ts compiles to dist/src/main.js')
  for (const m of build.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const source of (m[1] as string).split(/\s+/)) t.ok(existsSync(join(ROOT, source)), `COPY ${source} exists`)
  }
  const ignore = read('.dockerignore').split('\n')
  for (const entry of ['.git', 'node_modules', 'dist', '.env']) t.ok(ignore.includes(entry), `.dockerignore leaves out ${entry}`)
})

t.test('the cluster profile: three gateways on a 3-node NATS cluster, two workers, nginx with one upstream per gateway', async (t) => {
  const inProfile = Object.entries(services).filter(([, s]) => s.profiles?.includes('cluster')).map(([name]) => name).sort()
  t.same(inProfile, ['nats-1', 'nats-2', 'nats-3', 'nginx', 'tether-1', 'tether-2', 'tether-3', 'worker-1', 'worker-2'])
  const known = new Set<string>(SETTINGS.map((s) => s.env))
  const gateways = ['tether-1', 'tether-2', 'tether-3'].map((n) => services[n] as Service)
  const nodesOf = (url: string): string[] => url.split(',').map((u) => /@(nats-\d):1883$/.exec(u)?.[1] ?? `bad: ${u}`)
  for (const [i, g] of gateways.entries()) {
    const env = g.environment ?? {}
    t.same(Object.keys(env).filter((k) => !known.has(k)), [], `tether-${i + 1}: every variable is in SETTINGS`)
    t.equal(env.INSTANCE_ID, `tether-${i + 1}`, 'a fixed INSTANCE_ID of its own')
    t.same([...nodesOf(env.MQTT_URL ?? '')].sort(), ['nats-1', 'nats-2', 'nats-3'], 'every NATS node in MQTT_URL')
    t.equal(nodesOf(env.MQTT_URL ?? '')[0], `nats-${i + 1}`, 'starting on a node of its own')
    t.equal(env.MQTT_SUBSCRIBE_QOS, '0', 'subscriptions off JetStream (docs/brokers.md)')
    t.match(env.DATABASE_URL ?? '', /@postgres:5432\//, 'one database for all')
  }
  const workerKnown = new Set<string>(WORKER_SETTINGS.map((s) => s.env))
  for (const name of ['worker-1', 'worker-2']) {
    const env = services[name]?.environment ?? {}
    t.same(Object.keys(env).filter((k) => !workerKnown.has(k)), [], `${name}: every variable is in WORKER_SETTINGS`)
    t.equal(env.WORKER_ID, name)
    t.equal(env.MQTT_SUBSCRIBE_QOS, '0')
    t.notOk(env.MQTT_URL?.includes('tether-gateway'), 'with the workers\' broker account')
  }
  for (const name of ['nats-1', 'nats-2', 'nats-3']) {
    t.equal(services[name]?.environment?.NATS_NAME, name, `${name} names itself`)
    t.equal(hostPath(services[name] as Service, '/tether/nats.conf'), 'deploy/nats/nats.conf')
  }
  const nats = findExecutable('nats-server')
  if (nats === undefined) {
    t.fail('nats-server is not installed: .ci/run installs it')
  } else {
    const checked = spawnSync(nats, ['-t', '-c', join(ROOT, 'deploy/nats/nats.conf')], { env: { PATH: process.env.PATH ?? '', NATS_NAME: 'nats-1', MQTT_GATEWAY_PASSWORD: 'x', MQTT_WORKER_PASSWORD: 'y' }, encoding: 'utf8' })
    t.equal(checked.status, 0, `nats-server -t accepts deploy/nats/nats.conf: ${checked.stderr}${checked.stdout}`)
  }
  // nginx renders the shipped site with the sed line in its command: run that very line here.
  const nginx = services.nginx as Service
  const script = (Array.isArray(nginx.command) ? nginx.command.join('\n') : nginx.command ?? '')
  const sedLine = script.split('\n').find((l) => l.trim().startsWith('sed ')) ?? ''
  t.equal(hostPath(nginx, '/tether/tether.conf'), 'deploy/nginx/tether.conf')
  const rendered = spawnSync('sh', ['-ec', sedLine.replace('/tether/tether.conf', join(ROOT, 'deploy/nginx/tether.conf')).replace(/ > \S+$/, '')], { encoding: 'utf8' })
  t.equal(rendered.status, 0, rendered.stderr)
  const servers = rendered.stdout.split('\n').filter((l) => /^\s*server\s+[^{]/.test(l))
  t.same(servers.map((l) => l.trim()), ['tether-1', 'tether-2', 'tether-3'].map((h) => `server ${h}:8000 max_fails=1 fail_timeout=5s;`), 'one upstream server line per gateway, parameters kept')
  t.ok(nginx.depends_on !== undefined && ['tether-1', 'tether-2', 'tether-3'].every((g) => nginx.depends_on?.[g] !== undefined), 'nginx waits for the gateways')
})
