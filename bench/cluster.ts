/**
 * `npm run bench:cluster`: the cost of coordination when several gateways share one broker
 * (the scale-out issue, "Aggregate relay throughput with 1, 2 and 3 gateway processes"). For
 * each N in BENCH_GATEWAYS (1,2,3): N relay-mode gateways on one private Mosquitto with the
 * echo worker, and one closed-loop load of BENCH_CONCURRENCY (64) connections spread over
 * them round robin, as a load balancer would. On this 2-core machine the gateways compete for
 * the same cores, so aggregate throughput cannot grow; what the figures show is what each added
 * instance costs (presence heartbeats, more broker connections, more subscriptions).
 *
 * BENCH_NGINX=1 runs each N a second time through a real nginx (Debian's package) with the
 * shipped deploy/nginx/tether.conf and one upstream server line per gateway: the same chats
 * through the load balancer users would have in front.
 *
 * Env: BENCH_GATEWAYS (1,2,3), BENCH_CONCURRENCY (64), BENCH_SECONDS (10), BENCH_WARMUP_SECONDS
 * (2), BENCH_NGINX (0), plus the common BENCH_* variables and MOSQUITTO_BIN. Loopback only;
 * bounded runs.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { syntheticSessionIds } from './chat/http-load.js'
import { runLoad, type RunResult } from './chat/load-runner.js'
import { createBenchDatabase } from './lib/database.js'
import { LIMITS_LIFTED, TOPIC_PREFIX, linkEnv, startGateway, type Gateway } from './lib/gateway.js'
import { loadAverage1m, machineInfo } from './lib/machine-info.js'
import { mosquittoVersion, startMosquitto } from './lib/mosquitto.js'
import { writeResults } from './lib/results.js'
import { createRun, log } from './lib/run.js'
import { commandLine, envReader, readCommonSettings } from './lib/settings.js'
import { startWorker } from './lib/worker.js'
import { findExecutable } from '../test/fixtures/broker.js'
import { startNginx } from '../test/fixtures/nginx.js'

const TAG = 'bench:cluster'
const r = envReader(TAG)
const common = readCommonSettings(r, { fallback: 900, min: 60 })
const COUNTS = r.ints('BENCH_GATEWAYS', '1,2,3', { min: 1, max: 8 })
const CONCURRENCY = r.int('BENCH_CONCURRENCY', 64, 1, 4096)
const MEASURE_S = r.number('BENCH_SECONDS', 10, 1, 120)
const WARMUP_S = r.number('BENCH_WARMUP_SECONDS', 2, 0, 60)
const SESSIONS = 256
const NGINX = r.int('BENCH_NGINX', 0, 0, 1) === 1

const run = createRun(TAG)

async function main (): Promise<number> {
  run.arm(common.maxSeconds)
  const startedAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-cluster-'))
  run.defer(() => { rmSync(dir, { recursive: true, force: true }) })
  const broker = await startMosquitto(dir, common.mosquittoBin)
  run.defer(async () => { broker.proc.child.kill('SIGKILL') })
  const database = await createBenchDatabase({ adminUrl: common.adminDatabaseUrl, namePrefix: 'tether_cluster_', applicationName: 'tether-bench-cluster' })
  run.defer(async () => await database.drop())
  const worker = await startWorker({ url: broker.url, prefix: TOPIC_PREFIX, silent: false, chunks: 0, logFile: join(dir, 'worker.log') })
  run.defer(async () => { await worker.stop() })
  const authSecret = randomBytes(32).toString('hex')
  const rows: Array<{ gateways: number, via: 'direct' | 'nginx', result: RunResult, cpu: number }> = []
  const nginxBin = NGINX ? findExecutable('nginx') : undefined
  if (NGINX && nginxBin === undefined) throw new Error('BENCH_NGINX=1 needs nginx (apt-get install nginx)')
  const failures: string[] = []
  for (const n of COUNTS) {
    const gateways: Gateway[] = []
    try {
      for (let i = 0; i < n; i++) {
        gateways.push(await startGateway({
          label: `relay-${i}`,
          logFile: join(dir, `gateway-${n}-${i}.log`),
          readyTimeoutMs: common.readyTimeoutMs,
          env: (port) => ({ ...linkEnv({ port, mqttUrl: broker.url, prefix: TOPIC_PREFIX, databaseUrl: database.url, dataDir: join(dir, `data-${n}-${i}`), authSecret, chatMode: 'relay' }), ...LIMITS_LIFTED })
        }))
      }
      const pids: Record<string, number | undefined> = { broker: broker.proc.child.pid, worker: worker.proc.child.pid }
      gateways.forEach((g, i) => { pids[`gateway${i}`] = g.proc.child.pid })
      const load = async (ports: number[]): Promise<RunResult> => await runLoad({
        cmd: 'http',
        opts: {
          host: '127.0.0.1', port: ports[0] as number, ports, concurrency: CONCURRENCY, warmupS: WARMUP_S, measureS: MEASURE_S, drainMs: 5000,
          sessionIds: syntheticSessionIds(SESSIONS), expect: 'echo: hello', maxRequests: 5_000_000
        },
        maxLifeMs: (WARMUP_S + MEASURE_S) * 1000 + 20_000
      }, dir, pids)
      const cpuOf = (result: RunResult): number => gateways.reduce((sum, _g, i) => sum + (result.cpu_percent[`gateway${i}`] ?? 0), 0)
      const direct = await load(gateways.map((g) => g.port))
      rows.push({ gateways: n, via: 'direct', result: direct, cpu: cpuOf(direct) })
      log(`${TAG}: ${n} gateway(s): ${direct.rps} req/s, p50 ${direct.latency.p50_ms} ms, p99 ${direct.latency.p99_ms} ms, statuses ${JSON.stringify(direct.statuses)}, gateways' CPU ${cpuOf(direct)}% of a core`)
      if (nginxBin !== undefined) {
        const stops: Array<() => unknown> = []
        try {
          const nginx = await startNginx({ teardown: (fn) => { stops.push(fn) } }, nginxBin, { upstream: gateways.map((g) => `127.0.0.1:${g.port}`), chatReadTimeoutS: 120 })
          const via = await load([nginx.port])
          rows.push({ gateways: n, via: 'nginx', result: via, cpu: cpuOf(via) })
          log(`${TAG}: ${n} gateway(s) through nginx: ${via.rps} req/s, p50 ${via.latency.p50_ms} ms, p99 ${via.latency.p99_ms} ms, statuses ${JSON.stringify(via.statuses)}`)
        } finally {
          for (const stop of stops) await stop()
        }
      }
    } catch (err) {
      failures.push(`${n} gateways: ${(err as Error).message}`)
    } finally {
      for (const g of gateways) await g.stop()
    }
  }
  const base = rows.find((row) => row.gateways === 1 && row.via === 'direct')?.result.rps
  const machine = machineInfo(mosquittoVersion(common.mosquittoBin))
  const lines = [
    `### bench:cluster — ${startedAt}`,
    '',
    `Command: \`${commandLine('bench:cluster', ['BENCH_GATEWAYS', 'BENCH_CONCURRENCY', 'BENCH_SECONDS', 'BENCH_WARMUP_SECONDS', 'BENCH_NGINX'])}\``,
    '',
    `Machine: ${JSON.stringify(machine)}; load average ${loadAverage1m()} at end. Relay mode, echo worker with 0 chunks, c=${CONCURRENCY} spread round robin, ${WARMUP_S} s warm-up + ${MEASURE_S} s.`,
    '',
    '| gateways | via | req/s | vs 1 gateway direct | p50 ms | p99 ms | gateways\' CPU (% of one core) | broker CPU | errors |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---|',
    ...rows.map((row) => `| ${row.gateways} | ${row.via} | ${row.result.rps.toLocaleString('en-US')} | ${base === undefined ? '-' : `${((row.result.rps / base - 1) * 100).toFixed(1)}%`} | ${row.result.latency.p50_ms} | ${row.result.latency.p99_ms} | ${row.cpu} | ${row.result.cpu_percent.broker ?? '-'} | ${JSON.stringify(row.result.errors)} |`),
    ...(failures.length > 0 ? ['', `Failures: ${failures.join('; ')}`] : [])
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  const file = writeResults('cluster', startedAt, { startedAt, machine, rows, failures })
  log(`${TAG}: results in ${file}`)
  await run.cleanUp()
  run.disarm()
  return failures.length > 0 ? 1 : 0
}

run.exitWith(main, { exitAtOnce: true })
