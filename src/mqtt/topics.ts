/** Every topic Tether uses, built in one place from the prefix (contract: MQTT topics). */
export interface Topics {
  readonly chatRequest: string
  /** Cancels for requests the gateway stopped waiting for; every worker subscribes (never shared). */
  readonly chatCancel: string
  readonly replyTo: string
  readonly probe: string
  hints: (sessionId: string) => string
  state: (sessionId: string) => string
  readonly templates: string
  /** Presence (v1.1): a worker's heartbeats and last will. */
  workerPresence: (workerId: string) => string
  /** Every worker's presence topic, for the gateway's subscription. */
  readonly workersFilter: string
  /** Requests for one announced worker (v1.1): no `$share` needed. */
  chatRequestFor: (workerId: string) => string
  /** Cancels for one announced worker's requests, so cancels do not fan out to the fleet. */
  chatCancelFor: (workerId: string) => string
  /** Several gateways (v1.1): a gateway asks the workers, or one worker, to re-send a stream to it. */
  readonly chatResume: string
  chatResumeFor: (workerId: string) => string
  /** Several gateways: a gateway asks the others for a stream it does not hold. */
  readonly clusterResume: string
}

export function createTopics (prefix: string, instanceId: string): Topics {
  return {
    chatRequest: `${prefix}/chat/request`,
    chatCancel: `${prefix}/chat/cancel`,
    replyTo: `${prefix}/chat/reply/${instanceId}`,
    // The gateway publishes here and expects its own message back: proof that the broker
    // still routes for this connection, which a TCP keepalive alone cannot give.
    probe: `${prefix}/probe/${instanceId}`,
    hints: (sessionId) => `${prefix}/hints/${sessionId}`,
    state: (sessionId) => `${prefix}/state/${sessionId}`,
    templates: `${prefix}/templates`,
    workerPresence: (workerId) => `${prefix}/workers/${workerId}`,
    workersFilter: `${prefix}/workers/+`,
    chatRequestFor: (workerId) => `${prefix}/chat/request/${workerId}`,
    chatCancelFor: (workerId) => `${prefix}/chat/cancel/${workerId}`,
    chatResume: `${prefix}/chat/resume`,
    chatResumeFor: (workerId) => `${prefix}/chat/resume/${workerId}`,
    clusterResume: `${prefix}/cluster/resume`
  }
}
