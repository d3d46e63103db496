import t from 'tap'
import { encodeRequest, encodeResume, parseHeartbeat, parseReply, parseResume } from '../../../src/mqtt/protocol.js'
import { createTopics } from '../../../src/mqtt/topics.js'
import { demoReply } from '../../../src/mqtt/demo-responder.js'

t.test('well-formed replies of each type parse', async (t) => {
  t.same(parseReply('{"v":1,"request_id":"r-1","type":"chunk","delta":"he"}'), { ok: true, reply: { v: 1, request_id: 'r-1', type: 'chunk', delta: 'he' } })
  t.same(parseReply(Buffer.from('{"v":1,"request_id":"r-1","type":"done","content":"hello"}')), { ok: true, reply: { v: 1, request_id: 'r-1', type: 'done', content: 'hello' } })
  t.same(parseReply('{"v":1,"request_id":"r-1","type":"error","error":"boom"}'), { ok: true, reply: { v: 1, request_id: 'r-1', type: 'error', error: 'boom' } })
})

t.test('anything else is malformed and never throws', async (t) => {
  const bad = [
    '', 'not json', '[]', 'null', '42', '"done"',
    '{"request_id":"r","type":"done","content":"x"}',
    '{"v":2,"request_id":"r","type":"done","content":"x"}',
    '{"v":"1","request_id":"r","type":"done","content":"x"}',
    '{"v":1,"type":"done","content":"x"}',
    '{"v":1,"request_id":"a/b","type":"done","content":"x"}',
    '{"v":1,"request_id":"r","type":"shout","content":"x"}',
    '{"v":1,"request_id":"r","type":"chunk","delta":7}',
    '{"v":1,"request_id":"r","type":"done"}',
    '{"v":1,"request_id":"r","type":"error","error":null}'
  ]
  for (const payload of bad) t.same(parseReply(payload), { ok: false, reason: 'malformed' }, JSON.stringify(payload))
  t.same(parseReply(Buffer.from([0xff, 0xfe, 0x00])), { ok: false, reason: 'malformed' })
})

t.test('a request envelope round-trips as the contract\'s JSON', async (t) => {
  const envelope = { v: 1 as const, request_id: 'r', session_id: 's', user_id: 'u', content: 'hi', history: [{ role: 'user' as const, content: 'a' }], reply_to: 'llm/chat/reply/i', deadline: 123 }
  t.same(JSON.parse(encodeRequest(envelope)), envelope)
})

t.test('topics are built under the prefix', async (t) => {
  const topics = createTopics('acme/llm', 'gw-1')
  t.equal(topics.chatRequest, 'acme/llm/chat/request')
  t.equal(topics.replyTo, 'acme/llm/chat/reply/gw-1')
  t.equal(topics.probe, 'acme/llm/probe/gw-1')
  t.equal(topics.hints('s1'), 'acme/llm/hints/s1')
  t.equal(topics.state('s1'), 'acme/llm/state/s1')
})

t.test('the demo reply is labelled and its chunks add up to the full text', async (t) => {
  const { chunks, full } = demoReply('hello big world')
  t.equal(full, '[demo responder] You said: hello big world')
  t.equal(chunks.join(''), full)
  t.ok(chunks.length > 1, 'streamed in several chunks')
})

t.test('v1.1 replies: ack needs a worker id; worker_id is kept when valid and ignored when not; busy keeps retry', async (t) => {
  t.match(parseReply('{"v":1,"request_id":"r","type":"ack","worker_id":"w-1"}'), { ok: true, reply: { type: 'ack', worker_id: 'w-1' } })
  t.same(parseReply('{"v":1,"request_id":"r","type":"ack"}'), { ok: false, reason: 'malformed' })
  t.same(parseReply('{"v":1,"request_id":"r","type":"ack","worker_id":"a/b"}'), { ok: false, reason: 'malformed' })
  t.same(parseReply('{"v":1,"request_id":"r","type":"done","content":"x","worker_id":"gpu.node-1"}'), { ok: true, reply: { v: 1, request_id: 'r', type: 'done', content: 'x' } })
  t.same(parseReply('{"v":1,"request_id":"r","type":"error","error":"busy","retry":true,"worker_id":"w"}'), { ok: true, reply: { v: 1, request_id: 'r', type: 'error', error: 'busy', retry: true, worker_id: 'w' } })
})

t.test('heartbeats: the payload names its topic\'s worker, numbers are bounded, a last will needs no numbers', async (t) => {
  const hb = (o: Record<string, unknown>): Buffer => Buffer.from(JSON.stringify({ v: 1, worker_id: 'w', status: 'online', capacity: 4, in_flight: 1, heartbeat_ms: 1000, ...o }))
  t.match(parseHeartbeat(hb({}), 'w'), { ok: true, heartbeat: { capacity: 4, in_flight: 1, heartbeat_ms: 1000, status: 'online' } })
  t.same(parseHeartbeat(hb({}), 'other'), { ok: false, reason: 'impostor' })
  t.same(parseHeartbeat(hb({ capacity: 10_001 }), 'w'), { ok: false, reason: 'absurd' })
  t.same(parseHeartbeat(hb({ heartbeat_ms: 99 }), 'w'), { ok: false, reason: 'absurd' })
  t.same(parseHeartbeat(hb({ status: 'asleep' }), 'w'), { ok: false, reason: 'malformed' })
  t.match(parseHeartbeat(Buffer.from('{"v":1,"worker_id":"w","status":"offline"}'), 'w'), { ok: true, heartbeat: { status: 'offline' } })
  t.match(parseHeartbeat(hb({ status: 'draining' }), 'w'), { ok: true, heartbeat: { status: 'draining' } })
})

t.test('several gateways: a resume round-trips; one with a wildcard reply topic, a bad id or a negative after_seq is refused', async (t) => {
  const resume = { v: 1 as const, request_id: 'r-1', reply_to: 'llm/chat/reply/gw-b', after_seq: 3, user_id: 'u-1', from: 'gw-b' }
  t.same(parseResume(encodeResume(resume)), resume)
  t.same(parseResume(encodeResume({ ...resume, user_id: null })), { ...resume, user_id: null }, 'relay mode asks with no user')
  for (const bad of [{ reply_to: 'llm/chat/reply/#' }, { reply_to: 'llm/+/x' }, { request_id: 'a/b' }, { from: '' }, { after_seq: -1 }, { after_seq: 1.5 }, { user_id: 7 }, { v: 2 }]) {
    t.equal(parseResume(JSON.stringify({ ...resume, ...bad })), null, JSON.stringify(bad))
  }
  t.equal(parseResume(Buffer.alloc(5000, ' ')), null, 'past 4 KB it is not read')
})

t.test('several gateways: resumed, handover and replay parse on the reply topic; malformed ones do not', async (t) => {
  t.match(parseReply('{"v":1,"request_id":"r","type":"resumed","session_id":"s","user_id":"u","deadline":5,"worker_id":"w"}'), { ok: true, reply: { type: 'resumed', session_id: 's', user_id: 'u', deadline: 5, worker_id: 'w' } })
  t.match(parseReply('{"v":1,"request_id":"r","type":"handover","from":"gw-a"}'), { ok: true, reply: { type: 'handover', from: 'gw-a' } })
  t.match(parseReply('{"v":1,"request_id":"r","type":"replay","from":"gw-a","chunks":["a\\u0000","b"],"end":{"type":"error","error":"llm_stalled","message":"m"}}'), { ok: true, reply: { type: 'replay', chunks: ['a', 'b'], end: { type: 'error', error: 'llm_stalled' } } })
  for (const bad of [
    '{"v":1,"request_id":"r","type":"resumed","session_id":"s/x","user_id":"u","deadline":5}',
    '{"v":1,"request_id":"r","type":"resumed","session_id":"s","user_id":"u","deadline":"soon"}',
    '{"v":1,"request_id":"r","type":"handover"}',
    '{"v":1,"request_id":"r","type":"replay","from":"a","chunks":[1],"end":{"type":"done","message_id":"m","content":""}}',
    '{"v":1,"request_id":"r","type":"replay","from":"a","chunks":[],"end":{"type":"done"}}'
  ]) t.match(parseReply(bad), { ok: false }, bad)
})
