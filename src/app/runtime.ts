/**
 * Builds the runtime view (src/runtime-view.ts) from the live parts: the one place that says
 * where health, metrics and the status page get each fact.
 */
import type { PendingRegistry } from '../chat/pending-registry.js'
import type { WorkerFleet } from '../fleet/worker-fleet.js'
import type { GatewayPresence } from '../cluster/gateway-presence.js'
import type { Config } from '../config.js'
import type { Database } from '../db/database.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import type { RuntimeView } from '../runtime-view.js'
import type { StreamStore } from '../chat/stream-store.js'
import type { HintHub } from '../ws/hint-hub.js'
import type { SocketRegistry } from '../ws/socket-registry.js'

export interface RuntimeParts {
  config: Pick<Config, 'lagDegradedMs' | 'memorySoftLimitBytes' | 'streamBufferMaxBytes' | 'workerPresence'>
  now: () => number
  startedAt: number
  link: MqttLink
  registry: PendingRegistry
  lagP99Ms: () => number
  sockets: SocketRegistry
  hub: Pick<HintHub, 'sessions'>
  database: Database
  streams: Pick<StreamStore, 'size' | 'bytes'>
  shuttingDown: () => boolean
  fleet: WorkerFleet
  cluster: Pick<GatewayPresence, 'view'>
}

export function createRuntimeView (parts: RuntimeParts): RuntimeView {
  const { link, registry, sockets, hub, database } = parts
  return {
    now: parts.now,
    startedAt: parts.startedAt,
    link,
    pendingTotal: () => registry.size,
    pendingBySession: registry.bySession,
    lagP99Ms: parts.lagP99Ms,
    lagDegradedMs: parts.config.lagDegradedMs,
    memory: () => { const m = process.memoryUsage(); return { rss: m.rss, heapUsed: m.heapUsed } },
    memorySoftLimitBytes: parts.config.memorySoftLimitBytes,
    shuttingDown: parts.shuttingDown,
    websockets: (endpoint) => sockets.count(endpoint),
    hintSessions: () => hub.sessions,
    workers: () => ({ ...parts.fleet.summary(), mode: parts.config.workerPresence, announced: parts.fleet.announced }),
    workerList: parts.fleet.list,
    gateways: () => parts.cluster.view().instances.length,
    streams: () => ({ count: parts.streams.size, bytes: parts.streams.bytes, maxBytes: parts.config.streamBufferMaxBytes }),
    db: () => ({
      status: !database.ready ? 'migrating' : database.monitor.status,
      reachable: database.monitor.status === 'up',
      downSince: database.monitor.downSince,
      pool: database.stats(),
      writes: { queued: database.writes.queued, committing: database.writes.committing, maxQueued: database.writeQueueMax, cacheBytes: database.writes.cacheBytes }
    })
  }
}
