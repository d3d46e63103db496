import t from 'tap'
import { MAX_STRIKES, parseFrame, takeToken, type Bucket } from '../../../src/ws/frames.js'

const text = (s: string): ArrayBuffer => {
  const bytes = new TextEncoder().encode(s)
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)
}
const TYPES = ['state'] as const

t.test('parseFrame accepts a JSON object whose type is one of the endpoint\'s', async (t) => {
  const parsed = parseFrame(text('{"type":"state","data":{"x":1}}'), false, TYPES)
  t.same(parsed, { ok: true, frame: { type: 'state', data: { x: 1 } } })
})

t.test('parseFrame rejects a binary frame before looking at its bytes', async (t) => {
  const parsed = parseFrame(text('{"type":"state"}'), true, TYPES)
  t.equal(parsed.ok, false)
  if (!parsed.ok) t.equal(parsed.reason, 'binary')
})

t.test('parseFrame calls bad JSON, invalid UTF-8 and non-objects malformed', async (t) => {
  const invalidUtf8 = new Uint8Array([0x7b, 0x22, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]).buffer
  const cases: Array<[string, ArrayBuffer]> = [
    ['truncated JSON', text('{"type":"state"')],
    ['empty frame', text('')],
    ['invalid UTF-8 inside a string', invalidUtf8],
    ['a lone surrogate is still valid JSON text but not an object', text('"\\ud800"')],
    ['an array', text('[{"type":"state"}]')],
    ['null', text('null')],
    ['a number', text('42')],
    ['an object without type', text('{"data":1}')],
    ['a numeric type', text('{"type":1}')],
    ['a null type', text('{"type":null}')]
  ]
  for (const [name, frame] of cases) {
    const parsed = parseFrame(frame, false, TYPES)
    t.equal(parsed.ok ? 'ok' : parsed.reason, 'malformed', name)
  }
})

t.test('parseFrame calls a well-formed frame of another endpoint\'s type unknown_type, naming a bounded part of it', async (t) => {
  const parsed = parseFrame(text(JSON.stringify({ type: 'chat' })), false, TYPES)
  t.equal(parsed.ok ? 'ok' : parsed.reason, 'unknown_type')
  const long = parseFrame(text(JSON.stringify({ type: 'x'.repeat(10_000) })), false, TYPES)
  t.equal(long.ok ? 'ok' : long.reason, 'unknown_type')
  if (!long.ok) t.ok(long.message.length < 200, `message stays short (${long.message.length} chars)`)
})

t.test('parseFrame matches types exactly (no prefix, case or prototype tricks)', async (t) => {
  for (const type of ['State', 'stat', 'state ', 'constructor', 'toString', '__proto__']) {
    const parsed = parseFrame(text(JSON.stringify({ type })), false, TYPES)
    t.equal(parsed.ok ? 'ok' : parsed.reason, 'unknown_type', JSON.stringify(type))
  }
})

t.test('takeToken lets a full bucket spend its burst at one instant, then refuses', async (t) => {
  const bucket: Bucket = { tokens: 5, at: 1_000 }
  const taken = Array.from({ length: 8 }, () => takeToken(bucket, 1_000, 10, 5))
  t.same(taken, [true, true, true, true, true, false, false, false])
})

t.test('takeToken refills at perSecond: one token per 100 ms at 10/s', async (t) => {
  const bucket: Bucket = { tokens: 0, at: 0 }
  t.equal(takeToken(bucket, 99, 10, 5), false, '99 ms: 0.99 of a token')
  t.equal(takeToken(bucket, 100, 10, 5), true, '100 ms: one whole token')
  t.equal(takeToken(bucket, 100, 10, 5), false, 'and it is spent')
  t.equal(takeToken(bucket, 300, 10, 5), true, '300 ms: two more')
  t.equal(takeToken(bucket, 300, 10, 5), true)
  t.equal(takeToken(bucket, 300, 10, 5), false)
})

t.test('takeToken never holds more than burst however long the bucket idled', async (t) => {
  const bucket: Bucket = { tokens: 0, at: 0 }
  let granted = 0
  for (let i = 0; i < 100; i++) if (takeToken(bucket, 3_600_000, 10, 5)) granted++
  t.equal(granted, 5)
})

t.test('takeToken sustained over 10 s grants burst + rate x 10 s', async (t) => {
  const bucket: Bucket = { tokens: 20, at: 0 }
  let granted = 0
  // 1,000 attempts a second for 10 s, 1 ms apart.
  for (let now = 0; now <= 10_000; now++) if (takeToken(bucket, now, 10, 20)) granted++
  t.equal(granted, 20 + 100)
})

t.test('takeToken does not starve a bucket when the wall clock steps backwards', async (t) => {
  // The gateway's clock is Date.now(): an NTP step of an hour backwards must not leave a
  // socket rate-limited for an hour (and then closed with 4500 after 50 refusals).
  const bucket: Bucket = { tokens: 5, at: 3_600_000 }
  t.equal(takeToken(bucket, 0, 10, 5), true, 'right after the step: the tokens it had are still there')
  t.equal(takeToken(bucket, 1_000, 10, 5), true, 'a second later: refilled')
})

t.test('a socket is closed after MAX_STRIKES (50) rejected frames in a row', async (t) => {
  t.equal(MAX_STRIKES, 50)
})
