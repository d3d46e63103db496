import t from 'tap'
import { createTopics } from '../../../src/mqtt/topics.js'
import { createHintHub, hintFrame, wsTopic } from '../../../src/ws/hint-hub.js'

const ts = 1_700_000_000_123

/** The frame hintFrame builds, failing the test when it dropped the hint instead. */
function frameOf (sessionId: string, payload: Buffer, at: number): string {
  const frame = hintFrame(sessionId, payload, at)
  if (typeof frame !== 'string') throw new Error(`hint dropped: ${frame.dropped}`)
  return frame
}

t.test('hintFrame passes a JSON payload as data, with the session id and ts', async (t) => {
  const frame = JSON.parse(frameOf('s1', Buffer.from('{"level":3,"tags":["a"]}'), ts))
  t.same(frame, { type: 'hint', session_id: 's1', data: { level: 3, tags: ['a'] }, ts })
})

t.test('hintFrame passes a plain-text payload as a string', async (t) => {
  t.same(JSON.parse(frameOf('s1', Buffer.from('look left'), ts)), { type: 'hint', session_id: 's1', data: 'look left', ts })
  t.same(JSON.parse(frameOf('s1', Buffer.alloc(0), ts)).data, '', 'an empty payload is the empty string')
  t.same(JSON.parse(frameOf('s1', Buffer.from('{"half":'), ts)).data, '{"half":', 'broken JSON stays text')
})

t.test('hintFrame keeps JSON scalars as JSON values', async (t) => {
  t.equal(JSON.parse(frameOf('s1', Buffer.from('42'), ts)).data, 42)
  t.equal(JSON.parse(frameOf('s1', Buffer.from('"quoted"'), ts)).data, 'quoted')
  t.equal(JSON.parse(frameOf('s1', Buffer.from('null'), ts)).data, null)
})

t.test('hintFrame passes JSON through as published, never re-serialised', async (t) => {
  t.equal(frameOf('s1', Buffer.from('{ "b" : 1,\n "a":[1, 2] }'), ts), `{"type":"hint","session_id":"s1","data":{ "b" : 1,\n "a":[1, 2] },"ts":${ts}}`)
})

t.test('hintFrame drops JSON nested deeper than 64 levels instead of overflowing the stack', async (t) => {
  const deep = (n: number): Buffer => Buffer.from('['.repeat(n) + ']'.repeat(n))
  t.same(hintFrame('s1', deep(100_000), ts), { dropped: 'too_deep' }, 'a 100,000-deep array is dropped')
  t.same(hintFrame('s1', deep(65), ts), { dropped: 'too_deep' })
  t.same(JSON.parse(frameOf('s1', deep(64), ts)).data.length, 1, '64 levels pass')
  t.equal(JSON.parse(frameOf('s1', Buffer.from('['.repeat(100_000)), ts)).data.length, 100_000, 'unbalanced brackets are not JSON: passed on as text')
})

t.test('hintFrame always produces one valid JSON text, whatever the payload bytes', async (t) => {
  for (const payload of [Buffer.from([0xff, 0xfe, 0x00, 0x22]), Buffer.from('line\nbreak "quote" \\ back'), Buffer.from('</script>')]) {
    const frame = JSON.parse(frameOf('s1', payload, ts))
    t.equal(frame.type, 'hint')
    t.type(frame.data, 'string')
  }
})

interface FakeLink {
  subscribe: (topic: string, qos: 0 | 1 | 2, handler: (payload: Buffer, topic: string) => void) => void
  unsubscribe: (topic: string) => void
  subscribes: Array<{ topic: string, qos: number }>
  unsubscribes: string[]
  handlers: Map<string, (payload: Buffer, topic: string) => void>
}

function fakeLink (): FakeLink {
  const link: FakeLink = {
    subscribes: [],
    unsubscribes: [],
    handlers: new Map(),
    subscribe (topic, qos, handler) { link.subscribes.push({ topic, qos }); link.handlers.set(topic, handler) },
    unsubscribe (topic) { link.unsubscribes.push(topic); link.handlers.delete(topic) }
  }
  return link
}

function hub (): { link: FakeLink, published: Array<[string, string]>, hinted: string[], dropped: string[], hub: ReturnType<typeof createHintHub> } {
  const link = fakeLink()
  const published: Array<[string, string]> = []
  const hinted: string[] = []
  const dropped: string[] = []
  const h = createHintHub({
    link,
    topics: createTopics('llm', 'gw-1'),
    clock: { now: () => ts },
    maxBytes: 1024,
    publish: (topic, message) => { published.push([topic, message]) },
    onHint: (sessionId) => { hinted.push(sessionId) },
    onDropped: (reason) => { dropped.push(reason) }
  })
  return { link, published, hinted, dropped, hub: h }
}

t.test('a hint over maxBytes or nested too deep is dropped and counted; the next good one still flows', async (t) => {
  const { link, published, dropped, hub: h } = hub()
  h.join('s1')
  const deliver = link.handlers.get('llm/hints/s1') as (payload: Buffer, topic: string) => void
  deliver(Buffer.alloc(1025, 0x61), 'llm/hints/s1')
  deliver(Buffer.from('['.repeat(500) + ']'.repeat(500)), 'llm/hints/s1')
  // A retained poisonous hint comes back on every subscribe: each time it is dropped again, cheaply.
  deliver(Buffer.from('['.repeat(500) + ']'.repeat(500)), 'llm/hints/s1')
  deliver(Buffer.from('{"ok":true}'), 'llm/hints/s1')
  t.same(dropped, ['too_large', 'too_deep', 'too_deep'])
  t.equal(published.length, 1)
  t.same(JSON.parse(published[0]?.[1] ?? '').data, { ok: true })
})

t.test('the first socket of a session subscribes once at QoS 1; more sockets do not subscribe again', async (t) => {
  const { link, hub: h } = hub()
  t.equal(h.join('s1'), wsTopic('s1'))
  t.equal(h.join('s1'), wsTopic('s1'))
  t.equal(h.join('s1'), wsTopic('s1'))
  t.same(link.subscribes, [{ topic: 'llm/hints/s1', qos: 1 }])
  t.equal(h.sessions, 1)
  t.same(h.subscribedSessions(), ['s1'])
})

t.test('only the last socket of a session to leave unsubscribes', async (t) => {
  const { link, hub: h } = hub()
  h.join('s1'); h.join('s1'); h.join('s1')
  h.leave('s1'); h.leave('s1')
  t.same(link.unsubscribes, [], 'two of three gone: still subscribed')
  h.leave('s1')
  t.same(link.unsubscribes, ['llm/hints/s1'])
  t.equal(h.sessions, 0)
  t.same(h.subscribedSessions(), [])
})

t.test('a session that comes back after its last socket left subscribes again', async (t) => {
  const { link, hub: h } = hub()
  h.join('s1'); h.leave('s1'); h.join('s1')
  t.equal(link.subscribes.length, 2)
  t.equal(link.unsubscribes.length, 1)
  t.equal(h.sessions, 1)
})

t.test('a leave without a join neither unsubscribes nor drives the count below zero', async (t) => {
  const { link, hub: h } = hub()
  h.leave('ghost')
  h.join('s1')
  h.leave('ghost')
  t.same(link.unsubscribes, [])
  t.equal(h.sessions, 1)
  h.join('ghost')
  t.equal(link.subscribes.length, 2, 'ghost still subscribes on its first real join')
})

t.test('sessions are counted independently', async (t) => {
  const { link, hub: h } = hub()
  for (let i = 0; i < 100; i++) for (let k = 0; k < 10; k++) h.join(`s${i}`)
  t.equal(link.subscribes.length, 100)
  t.equal(h.sessions, 100)
  for (let i = 0; i < 100; i += 2) for (let k = 0; k < 10; k++) h.leave(`s${i}`)
  t.equal(link.unsubscribes.length, 50)
  t.equal(h.sessions, 50)
  t.same(new Set(h.subscribedSessions()), new Set(Array.from({ length: 50 }, (_, i) => `s${2 * i + 1}`)))
})

t.test('a hint from MQTT is published once on the session\'s uWS topic and counted', async (t) => {
  const { link, published, hinted, hub: h } = hub()
  h.join('s1'); h.join('s1'); h.join('s2')
  link.handlers.get('llm/hints/s1')?.(Buffer.from('{"a":1}'), 'llm/hints/s1')
  t.same(published, [[wsTopic('s1'), hintFrame('s1', Buffer.from('{"a":1}'), ts)]], 'one native publish for the session, however many sockets')
  t.same(hinted, ['s1'])
})
