/**
 * The announced LLM workers (contract v1.1, "Workers: presence"): one presence actor per
 * worker (machines/worker-presence.machine.ts), fed by the heartbeats and last wills on
 * `<prefix>/workers/+`, bounded in number, and the choice of where the next chat goes.
 *
 * Load is what this gateway has sent a worker and not yet seen settled, plus what other
 * gateways hold there: the worker's own `in_flight` at its last heartbeat, less what was ours
 * then. Ours is exact and changes at once; the others' part is a second old at most, and a
 * worker that is fuller than we thought answers `busy`, which is retried elsewhere.
 */
import { createActor, type Actor } from 'xstate'
import { workerPresenceMachine, type Heartbeat, type WorkerContext } from '../../machines/worker-presence.machine.js'
import type { Clock } from '../clock.js'
import { isValidId } from '../ids.js'
import type { Logger } from '../log.js'
import type { MqttLink } from '../mqtt/mqtt-link.js'
import { parseHeartbeat } from '../mqtt/protocol.js'
import type { Topics } from '../mqtt/topics.js'

export type PresenceDrop = 'malformed' | 'impostor' | 'absurd' | 'registry_full'
export type WorkerState = 'online' | 'suspect' | 'offline'

export interface WorkerView {
  worker_id: string
  state: WorkerState
  draining: boolean
  capacity: number
  /** Chats this gateway has in flight there. */
  in_flight: number
  /** What the worker last reported in flight (every gateway's). */
  reported_in_flight: number
  heartbeat_ms: number
  /** When it came online this time (ISO 8601). */
  since: string
  last_seen_ms: number
}

export interface FleetSummary {
  online: number
  suspect: number
  offline: number
  /** Capacity of the online workers that take new chats. */
  capacity: number
  /** Chats this gateway has in flight on announced workers. */
  in_flight: number
}

/** Where a chat can go: a worker, or why nowhere (`none`: nobody online; `full`: all at capacity). */
export type Choice = { workerId: string } | 'none' | 'full'

/** The largest presence message read. */
export const MAX_HEARTBEAT_BYTES = 4096

export interface WorkerFleetOptions {
  link: Pick<MqttLink, 'subscribe' | 'unsubscribe'>
  topics: Topics
  clock: Clock
  log: Logger
  /** WORKER_REGISTRY_MAX: workers remembered at once; heartbeats of more are dropped. */
  maxWorkers: number
  /** WORKER_FORGET_MS: how long an offline worker is remembered. */
  forgetAfterMs: number
  random?: () => number
  /** A worker went offline (silent for 3 intervals, or its last will): its chats need a new home. */
  onOffline?: (workerId: string) => void
  onDropped?: (reason: PresenceDrop) => void
  onTransition?: (to: WorkerState | 'forgotten') => void
}

export interface WorkerFleet {
  start: () => void
  stop: () => void
  /** Whether any worker has announced itself and is still remembered. */
  readonly announced: boolean
  /** Least loaded of two random online workers with room (power of two choices). */
  choose: (exclude?: string) => Choice
  /** A chat went to this worker / ended there. */
  take: (workerId: string) => void
  release: (workerId: string) => void
  list: () => WorkerView[]
  summary: () => FleetSummary
}

interface Member {
  actor: Actor<typeof workerPresenceMachine>
  /** Chats this gateway has there now, and at the worker's last heartbeat. */
  ours: number
  oursAtBeat: number
}

export function createWorkerFleet (options: WorkerFleetOptions): WorkerFleet {
  const { link, topics, clock, log } = options
  const random = options.random ?? Math.random
  const members = new Map<string, Member>()
  const under = topics.workersFilter.slice(0, -1)
  let fullLogged = false

  const machine = workerPresenceMachine.provide({
    actions: {
      cameOnline: ({ context }) => {
        options.onTransition?.('online')
        log.info({ worker_id: context.workerId, capacity: context.capacity, heartbeat_ms: context.heartbeatMs }, 'LLM worker online')
      },
      wentSuspect: ({ context }) => {
        options.onTransition?.('suspect')
        log.info({ worker_id: context.workerId, silent_ms: clock.now() - context.lastSeenAt }, 'LLM worker suspect: a heartbeat is late')
      },
      wentOffline: ({ context }) => {
        options.onTransition?.('offline')
        log.warn({ worker_id: context.workerId, silent_ms: clock.now() - context.lastSeenAt }, 'LLM worker offline')
        // Runs from a timer: a throw here would end the actor and reach the process's handler.
        try {
          options.onOffline?.(context.workerId)
        } catch (err) {
          log.error({ worker_id: context.workerId, err: err instanceof Error ? err.stack : String(err) }, 'failing over an offline worker\'s chats threw')
        }
      },
      forget: ({ context }) => {
        options.onTransition?.('forgotten')
        // Deferred: the actor is still delivering this transition.
        queueMicrotask(() => {
          const m = members.get(context.workerId)
          if (m !== undefined && m.actor.getSnapshot().status === 'done') { m.actor.stop(); members.delete(context.workerId) }
        })
      }
    }
  })

  function stateOf (m: Member): WorkerState {
    const v = m.actor.getSnapshot().value
    return typeof v === 'string' ? (v === 'forgotten' ? 'offline' : v as WorkerState) : 'online'
  }

  function contextOf (m: Member): WorkerContext { return m.actor.getSnapshot().context }

  /** Ours plus the others' share at the last heartbeat. */
  function load (m: Member): number {
    const c = contextOf(m)
    return m.ours + Math.max(0, c.reportedInFlight - m.oursAtBeat)
  }

  function onPresence (payload: Buffer, topic: string): void {
    // A heartbeat is ~120 bytes; anything far larger is not one, and is not parsed.
    if (payload.length > MAX_HEARTBEAT_BYTES) { drop('malformed'); return }
    const topicId = topic.slice(under.length)
    if (!isValidId(topicId)) { drop('malformed'); return }
    const parsed = parseHeartbeat(payload, topicId)
    if (!parsed.ok) { drop(parsed.reason, topicId); return }
    const hb = parsed.heartbeat
    const existing = members.get(hb.worker_id)
    if (hb.status === 'offline') {
      existing?.actor.send({ type: 'GONE', at: clock.now() })
      return
    }
    const beat: Heartbeat = { capacity: hb.capacity, inFlight: hb.in_flight, heartbeatMs: hb.heartbeat_ms, draining: hb.status === 'draining', at: clock.now() }
    if (existing !== undefined) {
      existing.oursAtBeat = existing.ours
      existing.actor.send({ type: 'HEARTBEAT', beat })
      return
    }
    if (members.size >= options.maxWorkers && !evictOneOffline()) {
      if (!fullLogged) { fullLogged = true; log.warn({ max: options.maxWorkers, worker_id: hb.worker_id }, 'worker registry full (WORKER_REGISTRY_MAX): heartbeats of new workers dropped') }
      drop('registry_full')
      return
    }
    const actor = createActor(machine, { clock, input: { workerId: hb.worker_id, forgetAfterMs: options.forgetAfterMs, beat } })
    members.set(hb.worker_id, { actor, ours: 0, oursAtBeat: 0 })
    actor.start()
  }

  function drop (reason: PresenceDrop, workerId?: string): void {
    options.onDropped?.(reason)
    // Debug: a peer that sends garbage every second must not fill the log; the counter shows it.
    log.debug({ reason, worker_id: workerId }, 'presence message dropped')
  }

  /** Makes room by forgetting the offline worker seen longest ago; false if none is offline. */
  function evictOneOffline (): boolean {
    let oldest: [string, Member] | null = null
    for (const entry of members) {
      if (stateOf(entry[1]) !== 'offline') continue
      if (oldest === null || contextOf(entry[1]).lastSeenAt < contextOf(oldest[1]).lastSeenAt) oldest = entry
    }
    if (oldest === null) return false
    oldest[1].actor.stop()
    members.delete(oldest[0])
    fullLogged = false
    return true
  }

  function takes (m: Member, exclude: string | undefined, id: string): boolean {
    if (id === exclude || stateOf(m) !== 'online') return false
    const c = contextOf(m)
    return !c.draining && load(m) < c.capacity
  }

  return {
    start () { link.subscribe(topics.workersFilter, 1, onPresence, { deliverUnder: under }) },
    stop () {
      link.unsubscribe(topics.workersFilter)
      for (const m of members.values()) m.actor.stop()
      members.clear()
    },
    get announced () { return members.size > 0 },
    choose (exclude) {
      // Two passes over a few workers beat keeping a sorted index up to date on every chat.
      let open = 0
      let anyOnline = false
      for (const [id, m] of members) {
        if (id !== exclude && stateOf(m) === 'online' && !contextOf(m).draining) anyOnline = true
        if (takes(m, exclude, id)) open++
      }
      if (open === 0) return anyOnline ? 'full' : 'none'
      const first = Math.floor(random() * open)
      const second = open === 1 ? first : (first + 1 + Math.floor(random() * (open - 1))) % open
      let i = 0
      let best: [string, Member] | null = null
      for (const entry of members) {
        if (!takes(entry[1], exclude, entry[0])) continue
        if (i === first || i === second) {
          if (best === null || ratio(entry[1]) < ratio(best[1])) best = entry
        }
        i++
      }
      return { workerId: (best as [string, Member])[0] }
    },
    take (workerId) {
      const m = members.get(workerId)
      if (m !== undefined) m.ours++
    },
    release (workerId) {
      const m = members.get(workerId)
      if (m !== undefined && m.ours > 0) m.ours--
    },
    list () {
      const now = clock.now()
      return [...members.entries()].map(([id, m]) => {
        const c = contextOf(m)
        return {
          worker_id: id,
          state: stateOf(m),
          draining: c.draining,
          capacity: c.capacity,
          in_flight: m.ours,
          reported_in_flight: c.reportedInFlight,
          heartbeat_ms: c.heartbeatMs,
          since: new Date(c.since).toISOString(),
          last_seen_ms: now - c.lastSeenAt
        }
      })
    },
    summary () {
      const s: FleetSummary = { online: 0, suspect: 0, offline: 0, capacity: 0, in_flight: 0 }
      for (const m of members.values()) {
        const state = stateOf(m)
        s[state]++
        if (state === 'online' && !contextOf(m).draining) s.capacity += contextOf(m).capacity
        s.in_flight += m.ours
      }
      return s
    }
  }

  function ratio (m: Member): number {
    const c = contextOf(m)
    return c.capacity === 0 ? Number.POSITIVE_INFINITY : load(m) / c.capacity
  }
}
