import { EventEmitter } from 'node:events'
import t from 'tap'
import { SimulatedClock } from 'xstate'
import type { Upstream, UpstreamInput } from '../../../src/llm-worker/openai-stream.js'
import { UpstreamError } from '../../../src/llm-worker/openai-stream.js'
import type { WorkerLink } from '../../../src/llm-worker/reply-publisher.js'
import { createLlmWorker, type LlmWorker } from '../../../src/llm-worker/worker.js'
import { createWorkerTopics } from '../../../src/llm-worker/worker-topics.js'
import { silentLogger } from '../../../src/log.js'
import type { LinkEvents } from '../../../src/mqtt/mqtt-link.js'
import type { LinkStateName } from '../../../machines/mqtt-link.machine.js'

const topics = createWorkerTopics('llm', 'w1', 'pool')
const REPLY_TO = 'llm/chat/reply/gw1'

/** A link whose state the test sets; it records what was published and what was (un)subscribed. */
function fakeLink (): WorkerLink & { published: any[], subscribed: Map<string, { deliverAs?: string, handler: (p: Buffer, topic: string) => void }>, deliver: (request: object) => void, setState: (s: LinkStateName) => void } {
  let state: LinkStateName = 'connected'
  const events = new EventEmitter<LinkEvents>()
  const subscribed = new Map<string, { deliverAs?: string, handler: (p: Buffer, topic: string) => void }>()
  const link = {
    published: [] as any[],
    subscribed,
    events,
    get state () { return state },
    publish (topic: string, payload: string | Buffer) {
      if (state !== 'connected') return false
      link.published.push({ topic, ...JSON.parse(payload.toString()) })
      return true
    },
    subscribe (topic: string, _qos: 0 | 1, handler: (p: Buffer, topic: string) => void, options?: { deliverAs?: string }) {
      subscribed.set(topic, { handler, ...(options?.deliverAs !== undefined ? { deliverAs: options.deliverAs } : {}) })
    },
    unsubscribe (topic: string) { subscribed.delete(topic) },
    deliver (request: object) {
      for (const entry of subscribed.values()) entry.handler(Buffer.from(JSON.stringify(request)), entry.deliverAs ?? 'llm/chat/request')
    },
    setState (next: LinkStateName) {
      const from = state
      state = next
      events.emit('transition', { from, to: next, at: 0, reason: null })
      if (next === 'reconnecting') events.emit('down', 'test')
    }
  }
  return link
}

interface Scripted { input: UpstreamInput, aborted: boolean, push: (delta: string) => void, end: () => void, fail: (err: unknown) => void }

/** An upstream whose every call streams exactly what the test pushes into it. */
function scriptedUpstream (): Upstream & { calls: Scripted[] } {
  const calls: Scripted[] = []
  return {
    calls,
    stream (input, signal) {
      const items: Array<{ delta: string } | { end: true } | { err: unknown }> = []
      let wake = (): void => {}
      const call: Scripted = {
        input,
        aborted: false,
        push: (delta) => { items.push({ delta }); wake() },
        end: () => { items.push({ end: true }); wake() },
        fail: (err) => { items.push({ err }); wake() }
      }
      signal.addEventListener('abort', () => { call.aborted = true; wake() })
      calls.push(call)
      return (async function * () {
        for (;;) {
          signal.throwIfAborted()
          const item = items.shift()
          if (item === undefined) { await new Promise<void>((resolve) => { wake = resolve }); continue }
          if ('delta' in item) yield item.delta
          else if ('end' in item) return
          else throw item.err
        }
      })()
    }
  }
}

const flush = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }

let n = 0
function request (overrides: Record<string, unknown> = {}): Record<string, unknown> & { request_id: string } {
  return { v: 1, request_id: `r${++n}`, session_id: 's', user_id: 'u', content: 'hi', history: [], reply_to: REPLY_TO, deadline: 10_000, ...overrides }
}

function setup (options: { concurrency?: number, queue?: number } = {}): { link: ReturnType<typeof fakeLink>, upstream: ReturnType<typeof scriptedUpstream>, clock: SimulatedClock, worker: LlmWorker } {
  const link = fakeLink()
  const upstream = scriptedUpstream()
  const clock = new SimulatedClock()
  const worker = createLlmWorker({ link, topics, upstream, concurrency: options.concurrency ?? 4, queue: options.queue ?? 4, clock, log: silentLogger() })
  worker.start()
  return { link, upstream, clock, worker }
}

/** A request's replies without the envelope fields (and without chunks' seq, which has its own test). */
const repliesTo = (link: ReturnType<typeof fakeLink>, id: string): any[] => link.published.filter((p) => p.request_id === id).map(({ topic: _t, v: _v, request_id: _r, seq: _s, ...rest }) => rest)

t.test('it subscribes with the shared filter and routes messages of the plain topic to itself', async (t) => {
  const { link } = setup()
  t.same([...link.subscribed.keys()], ['$share/pool/llm/chat/request', 'llm/chat/cancel', 'llm/chat/resume'], 'cancels and resumes on their own, never shared')
  t.equal(link.subscribed.get('$share/pool/llm/chat/request')?.deliverAs, 'llm/chat/request')
})

t.test('chunks carry seq 1, 2, 3 ... per request', async (t) => {
  const { link, upstream } = setup()
  const r = request()
  link.deliver(r)
  await flush()
  upstream.calls[0]?.push('a')
  upstream.calls[0]?.push('b')
  upstream.calls[0]?.push('c')
  upstream.calls[0]?.end()
  await flush()
  t.same(link.published.filter((p) => p.type === 'chunk').map((p) => p.seq), [1, 2, 3])
})

t.test('a cancel from the gateway aborts the upstream call and nothing more is sent; a waiting one never starts', async (t) => {
  const { link, upstream, worker } = setup({ concurrency: 1 })
  const running = request()
  const waiting = request()
  link.deliver(running)
  link.deliver(waiting)
  await flush()
  upstream.calls[0]?.push('partial')
  await flush()
  const cancel = link.subscribed.get('llm/chat/cancel')?.handler
  cancel?.(Buffer.from(JSON.stringify({ v: 1, request_id: running.request_id, reason: 'client_cancelled' })), 'llm/chat/cancel')
  cancel?.(Buffer.from(JSON.stringify({ v: 1, request_id: waiting.request_id, reason: 'client_gone' })), 'llm/chat/cancel')
  cancel?.(Buffer.from(JSON.stringify({ v: 1, request_id: 'someone-elses', reason: 'deadline' })), 'llm/chat/cancel')
  cancel?.(Buffer.from('{"not":"a cancel"}'), 'llm/chat/cancel')
  await flush()
  t.ok(upstream.calls[0]?.aborted, 'the model server sees its request aborted')
  upstream.calls[0]?.push('more')
  await flush()
  t.same(repliesTo(link, running.request_id), [{ type: 'chunk', delta: 'partial' }], 'nothing after the cancel')
  t.same(repliesTo(link, waiting.request_id), [], 'the waiting one was dropped unanswered')
  t.equal(upstream.calls.length, 1, 'and never called upstream')
  t.equal(worker.stats().cancelled, 2)
  t.equal(worker.stats().active + worker.stats().waiting, 0)
})

t.test('deltas go out as chunks on reply_to, then done with the whole text', async (t) => {
  const { link, upstream } = setup()
  const r = request({ content: 'q', history: [{ role: 'user', content: 'earlier' }] })
  link.deliver(r)
  await flush()
  t.same(upstream.calls[0]?.input, { history: [{ role: 'user', content: 'earlier' }], content: 'q' })
  upstream.calls[0]?.push('a')
  upstream.calls[0]?.push('')
  upstream.calls[0]?.push('b')
  upstream.calls[0]?.end()
  await flush()
  t.same(repliesTo(link, r.request_id), [{ type: 'chunk', delta: 'a' }, { type: 'chunk', delta: 'b' }, { type: 'done', content: 'ab' }])
  t.ok(link.published.every((p) => p.topic === REPLY_TO))
})

t.test('an UpstreamError is relayed; any other exception is a generic error without internals', async (t) => {
  const { link, upstream, worker } = setup()
  const a = request()
  const b = request()
  link.deliver(a)
  link.deliver(b)
  await flush()
  upstream.calls[0]?.fail(new UpstreamError('model server returned 500'))
  upstream.calls[1]?.fail(new Error('secret internal detail at /srv/key'))
  await flush()
  t.same(repliesTo(link, a.request_id), [{ type: 'error', error: 'model server returned 500' }])
  t.same(repliesTo(link, b.request_id), [{ type: 'error', error: 'worker failed: internal error' }])
  t.equal(worker.stats().failed, 2)
})

t.test('deadlines run on the injected clock: a waiting request is dropped, a running one aborted, and neither is answered', async (t) => {
  const { link, upstream, clock, worker } = setup({ concurrency: 1 })
  const running = request({ deadline: 1000 })
  const waiting = request({ deadline: 500 })
  link.deliver(running)
  link.deliver(waiting)
  await flush()
  upstream.calls[0]?.push('partial')
  await flush()
  clock.increment(499)
  t.equal(worker.stats().waiting, 1, 'still waiting at 499 ms')
  clock.increment(1)
  t.equal(worker.stats().waiting, 0, 'dropped at its deadline')
  t.equal(worker.stats().expired, 1)
  clock.increment(500)
  await flush()
  t.ok(upstream.calls[0]?.aborted, 'the running call was aborted at its deadline')
  t.equal(upstream.calls.length, 1, 'the dropped request never reached the upstream')
  t.same(repliesTo(link, running.request_id), [{ type: 'chunk', delta: 'partial' }], 'nothing after the abort')
  t.same(repliesTo(link, waiting.request_id), [])
  t.equal(worker.stats().timedOut, 1)
  t.equal(worker.stats().active, 0)
})

t.test('a request already past its deadline is dropped and counted', async (t) => {
  const { link, upstream, clock, worker } = setup()
  clock.set(5000)
  link.deliver(request({ deadline: 5000 }))
  await flush()
  t.equal(upstream.calls.length, 0)
  t.equal(link.published.length, 0)
  t.equal(worker.stats().expired, 1)
})

t.test('replies produced while the link is probing (stale) are held and sent in order when it is back', async (t) => {
  const { link, upstream } = setup()
  const r = request()
  link.deliver(r)
  await flush()
  upstream.calls[0]?.push('one ')
  await flush()
  link.setState('stale')
  upstream.calls[0]?.push('two ')
  upstream.calls[0]?.push('three')
  upstream.calls[0]?.end()
  await flush()
  t.same(repliesTo(link, r.request_id), [{ type: 'chunk', delta: 'one ' }], 'held while stale')
  link.setState('connected')
  t.same(repliesTo(link, r.request_id).map((x) => x.delta ?? x.content), ['one ', 'two ', 'three', 'one two three'], 'flushed in order')
})

t.test('the link going down abandons running and waiting requests without replies', async (t) => {
  const { link, upstream, worker } = setup({ concurrency: 1 })
  const running = request()
  const waiting = request()
  link.deliver(running)
  link.deliver(waiting)
  await flush()
  link.setState('reconnecting')
  await flush()
  t.ok(upstream.calls[0]?.aborted)
  t.equal(upstream.calls.length, 1)
  t.equal(link.published.length, 0)
  t.equal(worker.stats().linkLost, 2)
  t.equal(worker.stats().active + worker.stats().waiting, 0)
})

t.test('beyond the slots and the queue a request is refused at once with "worker overloaded"', async (t) => {
  const { link, upstream, worker } = setup({ concurrency: 1, queue: 1 })
  const [a, b, c] = [request(), request(), request()]
  link.deliver(a)
  link.deliver(b)
  link.deliver(c)
  t.same(repliesTo(link, c.request_id), [{ type: 'error', error: 'worker overloaded' }])
  t.equal(worker.stats().overloaded, 1)
  await flush()
  upstream.calls[0]?.end()
  await flush()
  t.equal(upstream.calls.length, 2, 'the waiting one started when the slot freed')
})

t.test('a malformed request is answered with an error when it names a usable reply_to, and dropped otherwise', async (t) => {
  const { link, upstream, worker } = setup()
  link.deliver(request({ request_id: 'bad1', content: 42 }))
  link.deliver(request({ request_id: 'bad2', reply_to: 'llm/templates' }))
  link.deliver(request({ request_id: 'v2', v: 2 }))
  await flush()
  t.same(repliesTo(link, 'bad1'), [{ type: 'error', error: 'malformed request: content must be a string' }])
  t.same(repliesTo(link, 'bad2'), [])
  t.same(repliesTo(link, 'v2'), [], 'another version is ignored')
  t.equal(worker.stats().malformed, 2)
  t.equal(upstream.calls.length, 0)
})

t.test('stop unsubscribes, waits out the grace period on the clock, then aborts with "worker shutting down"', async (t) => {
  const { link, upstream, clock, worker } = setup({ concurrency: 1 })
  const running = request()
  const waiting = request()
  link.deliver(running)
  link.deliver(waiting)
  await flush()
  const handler = link.subscribed.get(topics.subscription)?.handler
  let stopped = false
  const stopping = worker.stop(1000).then(() => { stopped = true })
  t.same([...link.subscribed.keys()], ['llm/chat/cancel', 'llm/chat/resume'], 'requests unsubscribed at once; cancels and resumes still heard during the grace')
  handler?.(Buffer.from(JSON.stringify(request({ request_id: 'late' }))), topics.requests)
  t.same(repliesTo(link, 'late'), [{ type: 'error', error: 'worker shutting down' }], 'a message delivered after stop began is answered at once')
  clock.increment(999)
  await flush()
  t.notOk(stopped)
  t.notOk(upstream.calls[0]?.aborted)
  clock.increment(1)
  await stopping
  t.ok(upstream.calls[0]?.aborted)
  t.same(repliesTo(link, running.request_id), [{ type: 'error', error: 'worker shutting down' }])
  t.same(repliesTo(link, waiting.request_id), [{ type: 'error', error: 'worker shutting down' }])
  t.equal(upstream.calls.length, 1, 'the waiting request never started')
  t.equal(worker.stats().shutDown, 2)
})

t.test('stop resolves as soon as the last request finishes within the grace period', async (t) => {
  const { link, upstream, worker } = setup()
  const r = request()
  link.deliver(r)
  await flush()
  const stopping = worker.stop(60_000)
  upstream.calls[0]?.push('ok')
  upstream.calls[0]?.end()
  await stopping
  t.same(repliesTo(link, r.request_id).at(-1), { type: 'done', content: 'ok' })
})

t.test('a resume from another gateway: its user\'s request is re-sent after after_seq to the new reply_to and goes on there; kept 60 s after the end', async (t) => {
  const { link, upstream, clock } = setup()
  const r = request({ deadline: 1_000_000 })
  link.deliver(r)
  await flush()
  upstream.calls[0]?.push('a')
  upstream.calls[0]?.push('b')
  await flush()
  const resume = (over: Record<string, unknown> = {}): void => {
    link.subscribed.get('llm/chat/resume')?.handler(Buffer.from(JSON.stringify({ v: 1, request_id: r.request_id, reply_to: 'llm/chat/reply/gw2', after_seq: 1, user_id: 'u', from: 'gw2', ...over })), 'llm/chat/resume')
  }
  const before = link.published.length
  resume({ user_id: 'someone-else' })
  resume({ reply_to: 'elsewhere/gw2' })
  resume({ request_id: 'unknown-request' })
  t.equal(link.published.length, before, 'another user, a topic outside the reply topics, a request it never had: silence')
  resume()
  const sent = link.published.slice(before)
  t.same(sent.map((p) => [p.topic, p.type, p.seq]), [[REPLY_TO, 'moved', undefined], ['llm/chat/reply/gw2', 'resumed', undefined], ['llm/chat/reply/gw2', 'chunk', 2]], 'the gateway it leaves is told first')
  t.match(sent[0], { to: 'gw2' })
  t.match(sent[1], { session_id: 's', user_id: 'u', deadline: 1_000_000 })
  const again = link.published.length
  resume()
  t.same(link.published.slice(again).map((p) => p.type), ['resumed', 'chunk'], 'asked again by the same gateway: re-sent, no `moved` to itself')
  upstream.calls[0]?.push('c')
  upstream.calls[0]?.end()
  await flush()
  t.same(link.published.slice(again + 2).map((p) => [p.topic, p.type]), [['llm/chat/reply/gw2', 'chunk'], ['llm/chat/reply/gw2', 'done']], 'the rest goes to the new gateway')
  const afterEnd = link.published.length
  resume({ reply_to: 'llm/chat/reply/gw3', after_seq: 0 })
  t.same(link.published.slice(afterEnd).map((p) => [p.type, p.seq]), [['resumed', undefined], ['chunk', 1], ['chunk', 2], ['chunk', 3], ['done', undefined]], 'a finished one: all of it and its end')
  clock.increment(60_001)
  const late = link.published.length
  resume({ reply_to: 'llm/chat/reply/gw4', after_seq: 0 })
  t.equal(link.published.length, late, 'forgotten after 60 s')
})
