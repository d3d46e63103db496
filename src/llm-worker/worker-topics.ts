/** The topics the worker uses, built in one place from the prefix (docs/protocol.md, Topics). */
import { createTopics } from '../mqtt/topics.js'

export interface WorkerTopics {
  /** Where requests are published, and the topic they arrive with. */
  readonly requests: string
  /** What the worker subscribes to: `requests`, or its `$share/<group>/` form. */
  readonly subscription: string
  /** Replies may only go to topics under this (`<prefix>/chat/reply/`). */
  readonly replyPrefix: string
  /** The link's own liveness probe topic. */
  readonly probe: string
  /** Cancels from the gateways; every worker subscribes, never as a shared group. */
  readonly cancel: string
  /** v1.1, an announced worker's own: requests sent to it alone, cancels for those, and its presence. */
  readonly direct: string
  readonly directCancel: string
  readonly presence: string
  /** Several gateways (v1.1): a gateway asks for a stream to be re-sent to it; every worker, and this one alone. */
  readonly resume: string
  readonly directResume: string
}

export function createWorkerTopics (prefix: string, workerId: string, sharedGroup: string | undefined): WorkerTopics {
  // The same names as the gateway's, so the two can never disagree about the protocol's layout.
  const topics = createTopics(prefix, workerId)
  return {
    requests: topics.chatRequest,
    subscription: sharedGroup === undefined ? topics.chatRequest : `$share/${sharedGroup}/${topics.chatRequest}`,
    replyPrefix: topics.replyTo.slice(0, topics.replyTo.length - workerId.length),
    probe: topics.probe,
    cancel: topics.chatCancel,
    direct: topics.chatRequestFor(workerId),
    directCancel: topics.chatCancelFor(workerId),
    presence: topics.workerPresence(workerId),
    resume: topics.chatResume,
    directResume: topics.chatResumeFor(workerId)
  }
}
