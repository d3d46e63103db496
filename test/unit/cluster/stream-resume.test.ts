/**
 * The stream takeover's steps and bounds (src/cluster/stream-resume.ts) with a recording link and
 * a simulated clock: the gateways first, the workers after CLUSTER_HANDOVER_WAIT_MS, and an end
 * at STREAM_TAKEOVER_TIMEOUT_MS; a worker's `resumed` for another user ignored; the gateway
 * that holds a stream handing it over (or replaying it) only for its owner.
 */
import t from 'tap'
import { createStreamResume, type FindRequest, type StreamResumeOptions } from '../../../src/cluster/stream-resume.js'
import { createStreamStore, type StreamEnd, type StreamListener } from '../../../src/chat/stream-store.js'
import { TetherError } from '../../../src/errors.js'
import { describeFailure } from '../../../src/failure.js'
import { silentLogger } from '../../../src/log.js'
import { createTopics } from '../../../src/mqtt/topics.js'
import { CountingClock } from '../../fixtures/counting-clock.js'

const WAIT_MS = 300
const TIMEOUT_MS = 2000

interface Published { topic: string, payload: any }

function setup (overrides: Partial<StreamResumeOptions> = {}, instanceId = 'gw-b') {
  const clock = new CountingClock()
  const published: Published[] = []
  const handlers = new Map<string, (payload: Buffer, topic: string) => void>()
  const link = {
    isUp: true,
    publish: (topic: string, payload: string | Buffer) => { published.push({ topic, payload: JSON.parse(payload.toString()) }); return true },
    subscribe: (topic: string, _qos: number, handler: (payload: Buffer, topic: string) => void) => { handlers.set(topic, handler) },
    unsubscribe: (topic: string) => { handlers.delete(topic) }
  }
  const detached: string[] = []
  const chats = { detach: (requestId: string) => { detached.push(requestId); return true }, attach: () => true, cancel: () => true }
  const log = silentLogger()
  const streams = createStreamStore({ chats, clock, retainMs: 60_000, maxBytes: 1_000_000, describe: (err, requestId) => describeFailure(err, log, { request_id: requestId }) })
  const adopted: Array<{ requestId: string, userId: string, sessionId: string, workerId: string | null }> = []
  const asked: string[] = []
  const results: string[] = []
  const resume = createStreamResume({
    link,
    topics: createTopics('llm', instanceId),
    instanceId,
    streams,
    chat: { workerOf: (requestId) => { asked.push(requestId); return requestId === 'v1-1' ? null : 'w-1' } },
    adopt: (turn, worker, sink) => { adopted.push({ ...turn, workerId: worker.workerId }); sink.submitted?.() },
    clock,
    log,
    handoverWaitMs: WAIT_MS,
    takeoverTimeoutMs: TIMEOUT_MS,
    onTakeover: (r) => { results.push(r) },
    ...overrides
  })
  resume.start()
  return { clock, published, handlers, streams, adopted, asked, results, resume, link, detached }
}

function listener (): StreamListener & { chunks: Array<[string, number]>, ends: StreamEnd[] } {
  const chunks: Array<[string, number]> = []
  const ends: StreamEnd[] = []
  return { chunks, ends, chunk: (d, s) => { chunks.push([d, s]) }, end: (e) => { ends.push(e) } }
}

function find (resume: ReturnType<typeof setup>['resume'], over: Partial<FindRequest> = {}): { outcomes: unknown[], abort: () => void, l: ReturnType<typeof listener> } {
  const outcomes: unknown[] = []
  const l = listener()
  const abort = resume.find({ requestId: 'req-1', ownerId: 'u-1', listener: l, afterSeq: 2, gone: () => false, done: (o) => { outcomes.push(o) }, ...over })
  return { outcomes, abort, l }
}

t.test('asks the gateways, then after the handover wait the workers from the first chunk, then ends stream_interrupted at the bound', async (t) => {
  const { clock, published, resume, results } = setup()
  const { outcomes } = find(resume)
  t.same(published.map((p) => p.topic), ['llm/cluster/resume'])
  t.match(published[0]?.payload, { v: 1, request_id: 'req-1', reply_to: 'llm/chat/reply/gw-b', after_seq: 2, user_id: 'u-1', from: 'gw-b' })
  clock.advance(WAIT_MS - 1)
  t.equal(published.length, 1, 'the workers are not asked before the wait is over')
  clock.advance(1)
  t.same(published.map((p) => p.topic), ['llm/cluster/resume', 'llm/chat/resume'])
  t.equal(published[1]?.payload.after_seq, 0, 'workers re-send from the first chunk, so the whole answer is stored')
  clock.advance(TIMEOUT_MS - WAIT_MS - 1)
  t.same(outcomes, [])
  clock.advance(1)
  t.equal(outcomes.length, 1)
  t.ok(outcomes[0] instanceof TetherError && outcomes[0].code === 'stream_interrupted')
  t.same(results, ['interrupted'])
  t.equal(resume.size, 0)
  t.equal(clock.liveTimers, 0, 'no timer left behind')
})

t.test('a handover skips the workers\' broadcast; the worker\'s resumed adopts the chat and the client hears only what it lacks', async (t) => {
  const { clock, published, resume, adopted, results } = setup()
  const { outcomes, l } = find(resume)
  t.ok(resume.onReply({ v: 1, request_id: 'req-1', type: 'handover', from: 'gw-a' }))
  clock.advance(WAIT_MS * 2)
  t.equal(published.filter((p) => p.topic === 'llm/chat/resume').length, 0, 'no broadcast after a handover')
  t.ok(resume.onReply({ v: 1, request_id: 'req-1', type: 'resumed', session_id: 's-1', user_id: 'u-1', deadline: clock.now() + 10_000, worker_id: 'w-1' }))
  t.same(adopted, [{ requestId: 'req-1', userId: 'u-1', sessionId: 's-1', workerId: 'w-1' }])
  t.equal(outcomes.length, 1)
  t.same(results, ['handed_over'])
  const stream = outcomes[0] as { sink: { chunk: (d: string, s: number) => void } }
  for (const [i, d] of ['a', 'b', 'c', 'd'].entries()) stream.sink.chunk(d, i + 1)
  t.same(l.chunks, [['c', 3], ['d', 4]], 'chunks 1 and 2 (the client has them) are kept, not sent')
  t.equal(clock.liveTimers, 0)
})

t.test('a resumed naming another user is ignored; the lookup runs on to its bound', async (t) => {
  const { clock, resume, adopted } = setup()
  const { outcomes } = find(resume)
  t.notOk(resume.onReply({ v: 1, request_id: 'req-1', type: 'resumed', session_id: 's-1', user_id: 'someone-else', deadline: clock.now() + 10_000 }))
  t.same(adopted, [])
  clock.advance(WAIT_MS)
  clock.advance(TIMEOUT_MS)
  t.ok(outcomes[0] instanceof TetherError && outcomes[0].code === 'stream_interrupted')
})

t.test('a refused adoption (a cap) cancels the worker and answers the error', async (t) => {
  const { clock, resume, published, results } = setup({ adopt: () => { throw new TetherError('too_many_requests') } })
  const { outcomes } = find(resume)
  resume.onReply({ v: 1, request_id: 'req-1', type: 'resumed', session_id: 's-1', user_id: 'u-1', deadline: clock.now() + 10_000, worker_id: 'w-9' })
  t.ok(outcomes[0] instanceof TetherError && outcomes[0].code === 'too_many_requests')
  t.match(published.at(-1), { topic: 'llm/chat/cancel/w-9', payload: { request_id: 'req-1', reason: 'client_gone' } })
  t.same(results, ['refused'])
})

t.test('a replay from the gateway that kept a finished stream ends the lookup with the stream replayed after after_seq', async (t) => {
  const { resume, results } = setup()
  const { outcomes, l } = find(resume, { afterSeq: 1 })
  t.ok(resume.onReply({ v: 1, request_id: 'req-1', type: 'replay', from: 'gw-a', chunks: ['x', 'y'], end: { type: 'done', message_id: 'm-1', content: 'xy' } }))
  t.equal(outcomes.length, 1)
  t.same(l.chunks, [['y', 2]])
  t.match(l.ends, [{ type: 'done', messageId: 'm-1', content: 'xy' }])
  t.same(results, ['replayed'])
})

t.test('aborted (the client left): the lookup runs on unanswered, and a stream that arrives is adopted detached, never left with nobody', async (t) => {
  const { clock, resume, adopted, detached } = setup()
  const { outcomes, abort } = find(resume)
  abort()
  clock.advance(WAIT_MS)
  clock.advance(TIMEOUT_MS)
  t.same(outcomes, [], 'nobody to answer')
  t.equal(resume.size, 0)
  t.equal(clock.liveTimers, 0)
  t.notOk(resume.onReply({ v: 1, request_id: 'req-1', type: 'handover', from: 'gw-a' }), 'a late answer is nobody\'s')

  const second = find(resume, { requestId: 'req-2' })
  second.abort()
  t.ok(resume.onReply({ v: 1, request_id: 'req-2', type: 'resumed', session_id: 's-1', user_id: 'u-1', deadline: clock.now() + 10_000, worker_id: 'w-1' }))
  t.equal(adopted.at(-1)?.requestId, 'req-2', 'the worker moved it here: adopted')
  t.same(second.outcomes, [], 'and nothing answered')
  t.same(detached, ['req-2'], 'detached at once: its resume grace runs, then the worker is cancelled')
  t.equal(clock.liveTimers, 0)
})

t.test('refused at once: a second lookup for the same stream, past the per-user and the total bound, the link down', async (t) => {
  const { resume, link } = setup({ maxLookups: 3, maxLookupsPerOwner: 2 })
  find(resume)
  t.match(find(resume).outcomes[0], { code: 'invalid_request' })
  find(resume, { requestId: 'req-2' })
  t.match(find(resume, { requestId: 'req-3' }).outcomes[0], { code: 'too_many_requests', message: /of your streams/ })
  find(resume, { requestId: 'req-4', ownerId: 'u-2' })
  t.match(find(resume, { requestId: 'req-5', ownerId: 'u-3' }).outcomes[0], { code: 'too_many_requests', message: /at once/ })
  link.isUp = false
  resume.stop()
  t.match(find(resume, { requestId: 'req-6', ownerId: 'u-9' }).outcomes[0], { code: 'llm_unavailable' })
})

t.test('the gateway that holds a stream: asks the worker to answer its owner only (the chat stays until the worker moves it), replays a finished one, ignores its own asks', async (t) => {
  const { handlers, streams, published, asked } = setup({}, 'gw-a')
  const ask = (over: Record<string, unknown>): void => { handlers.get('llm/cluster/resume')?.(Buffer.from(JSON.stringify({ v: 1, request_id: 'live-1', reply_to: 'llm/chat/reply/gw-b', after_seq: 1, user_id: 'u-1', from: 'gw-b', ...over })), 'llm/cluster/resume') }
  const live = streams.open('live-1', 'u-1', listener())
  live.sink.submitted?.()
  live.sink.chunk?.('a', 1)
  ask({ user_id: 'intruder' })
  ask({ from: 'gw-a' })
  ask({ reply_to: 'elsewhere/gw-b' })
  t.same(asked, [], 'not for another user, not its own ask, not to a topic outside the reply topics')
  ask({})
  t.same(asked, ['live-1'])
  t.same(published.map((p) => [p.topic, p.payload.type ?? p.payload.after_seq]), [['llm/chat/reply/gw-b', 'handover'], ['llm/chat/resume/w-1', 0]])
  t.notOk(live.settled, 'the stream stays here until its worker says it moved')
  const v1 = streams.open('v1-1', 'u-1', listener())
  v1.sink.submitted?.()
  ask({ request_id: 'v1-1' })
  t.same(published.at(-1)?.topic, 'llm/chat/resume', 'a worker this gateway cannot name is asked on the broadcast topic')

  const done = streams.open('done-1', 'u-1', listener())
  done.sink.submitted?.()
  done.sink.chunk?.('p', 1)
  done.sink.chunk?.('q', 2)
  done.sink.done({ messageId: 'm-7', content: 'pq', latencyMs: 5 })
  ask({ request_id: 'done-1' })
  t.match(published.at(-1), { topic: 'llm/chat/reply/gw-b', payload: { type: 'replay', from: 'gw-a', chunks: ['p', 'q'], end: { type: 'done', message_id: 'm-7', content: 'pq' } } })
  handlers.get('llm/cluster/resume')?.(Buffer.from('{"v":1,"request_id":"x"'), 'llm/cluster/resume')
  handlers.get('llm/cluster/resume')?.(Buffer.alloc(10_000, 'a'), 'llm/cluster/resume')
  t.pass('malformed and oversized asks are ignored')
})
