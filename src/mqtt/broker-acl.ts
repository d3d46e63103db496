/**
 * Who may do what on the broker, as data: the embedded broker enforces it (embedded-broker.ts)
 * and deploy/mosquitto/acl is this table written in Mosquitto's syntax (a test keeps the two in
 * step). Two accounts: the gateway, and LLM workers (the demo responder is one). A worker may
 * read requests, cancels and state frames and write replies and hints, but never read another
 * gateway's replies or the hints sent to users; the gateway reads only its own reply topic.
 * `%c` is the connecting client's id (Mosquitto's pattern substitution).
 */
export type BrokerRole = 'gateway' | 'worker'
export type Access = 'read' | 'write' | 'readwrite'

export interface AclRule {
  readonly access: Access
  /** Relative to the topic prefix; may hold + and # and %c (the client id, substituted). */
  readonly topic: string
}

export const BROKER_ACL: Readonly<Record<BrokerRole, readonly AclRule[]>> = Object.freeze({
  gateway: Object.freeze<AclRule[]>([
    { access: 'write', topic: 'chat/request' },
    { access: 'write', topic: 'chat/cancel' },
    // v1.1: requests and cancels for one announced worker, and every worker's presence.
    { access: 'write', topic: 'chat/request/+' },
    { access: 'write', topic: 'chat/cancel/+' },
    { access: 'read', topic: 'workers/+' },
    // v1.1: the gateways of a cluster announce themselves (retained) and read each other. A
    // per-user rule (Mosquitto applies %c patterns to every account, workers included).
    { access: 'readwrite', topic: 'gateways/+' },
    { access: 'read', topic: 'chat/reply/%c' },
    // v1.1, several gateways: a gateway asks the others and the workers for a stream it does not
    // hold, and hands a stream over or replays it on the asking gateway's reply topic.
    { access: 'readwrite', topic: 'cluster/resume' },
    { access: 'write', topic: 'chat/resume' },
    { access: 'write', topic: 'chat/resume/+' },
    { access: 'write', topic: 'chat/reply/+' },
    { access: 'read', topic: 'hints/+' },
    { access: 'write', topic: 'state/+' },
    { access: 'readwrite', topic: 'probe/%c' }
  ]),
  worker: Object.freeze<AclRule[]>([
    { access: 'read', topic: 'chat/request' },
    { access: 'read', topic: 'chat/cancel' },
    // v1.1: a worker announces only itself (its client id is its worker id) and reads only its own requests.
    { access: 'write', topic: 'workers/%c' },
    { access: 'read', topic: 'chat/request/%c' },
    { access: 'read', topic: 'chat/cancel/%c' },
    // v1.1: a gateway asks for a stream to be re-sent to it (every worker, or this one).
    { access: 'read', topic: 'chat/resume' },
    { access: 'read', topic: 'chat/resume/%c' },
    { access: 'write', topic: 'chat/reply/+' },
    { access: 'write', topic: 'hints/+' },
    { access: 'read', topic: 'state/+' },
    { access: 'read', topic: 'templates' },
    { access: 'readwrite', topic: 'probe/%c' }
  ])
})

/** The account names the embedded broker creates and deploy/mosquitto/ documents. */
export const BROKER_USERS: Readonly<Record<BrokerRole, string>> = Object.freeze({ gateway: 'tether-gateway', worker: 'tether-worker' })

/** A subscription's topic filter without its `$share/<group>/` prefix (MQTT 5 4.8.2). */
export function unshared (filter: string): string {
  const m = /^\$share\/[^/+#]+\/(.+)$/.exec(filter)
  return m === null ? filter : m[1] as string
}

/**
 * Whether every topic `filter` can match is matched by `pattern` (a subscription must stay
 * inside what the rule allows: `hints/+` is covered by `hints/+`, `hints/#` is not).
 */
export function covers (pattern: string, filter: string): boolean {
  const p = pattern.split('/')
  const f = filter.split('/')
  for (let i = 0; i < p.length; i++) {
    const level = p[i] as string
    if (level === '#') return true
    const want = f[i]
    if (want === undefined) return false
    if (level === '+') { if (want === '#') return false; continue }
    if (want !== level) return false
  }
  return f.length === p.length
}

function rulesFor (role: BrokerRole, prefix: string, clientId: string, mode: 'read' | 'write'): string[] {
  return BROKER_ACL[role]
    .filter((r) => r.access === 'readwrite' || r.access === mode)
    // A client id holding a wildcard would widen its own rule: such an id never matches.
    .filter((r) => !r.topic.includes('%c') || !/[+#/]/.test(clientId))
    .map((r) => `${prefix}/${r.topic.replace('%c', clientId)}`)
}

export function mayPublish (role: BrokerRole, prefix: string, clientId: string, topic: string): boolean {
  return rulesFor(role, prefix, clientId, 'write').some((pattern) => covers(pattern, topic))
}

export function maySubscribe (role: BrokerRole, prefix: string, clientId: string, filter: string): boolean {
  const plain = unshared(filter)
  return rulesFor(role, prefix, clientId, 'read').some((pattern) => covers(pattern, plain))
}

/** The table in Mosquitto's acl_file syntax, for deploy/mosquitto/acl. */
export function mosquittoAcl (prefix: string): string {
  const lines: string[] = []
  for (const role of Object.keys(BROKER_ACL) as BrokerRole[]) {
    lines.push(`user ${BROKER_USERS[role]}`)
    for (const rule of BROKER_ACL[role]) {
      // Mosquitto substitutes %c only in `pattern` lines, which apply to every user; the
      // per-user form of a %c rule is therefore written as a pattern under a comment.
      if (!rule.topic.includes('%c')) lines.push(`topic ${rule.access} ${prefix}/${rule.topic}`)
    }
    lines.push('')
  }
  const patterns = new Set<string>()
  for (const role of Object.keys(BROKER_ACL) as BrokerRole[]) {
    for (const rule of BROKER_ACL[role]) if (rule.topic.includes('%c')) patterns.add(`pattern ${rule.access} ${prefix}/${rule.topic}`)
  }
  return [...lines, ...patterns].join('\n') + '\n'
}
