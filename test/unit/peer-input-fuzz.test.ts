/**
 * Every parser of bytes from a client or a worker, fed hostile input: deep nesting, huge
 * numbers, __proto__, lone surrogates, NUL, invalid UTF-8, megabyte strings, wrong types and
 * random bytes. None may throw, and whatever one accepts must survive being serialised again
 * (the crash this pins: JSON.stringify overflowing on a 5,000-deep array from a socket).
 * Deterministic: the generator is seeded, so a failure names a reproducible case.
 */
import t from 'tap'
import { createTokens } from '../../src/auth/tokens.js'
import { parseJsonObject, checkText, checkId } from '../../src/http/validate.js'
import { parseChatRequest } from '../../src/llm-worker/request-envelope.js'
import { parseHeartbeat, parseReply, parseResume } from '../../src/mqtt/protocol.js'
import { parseFrame } from '../../src/ws/frames.js'
import { hintFrame } from '../../src/ws/hint-hub.js'
import { pickToken } from '../../src/ws/upgrade.js'
import { deep, HOSTILE } from '../fixtures/hostile-json.js'
import { seeded } from '../fixtures/seeded-random.js'


function randomText (next: () => number): string {
  const pieces = ['{', '}', '[', ']', '"', '\\', ':', ',', '"type"', '"state"', '"chat"', '"data"', '1e308', 'null', '\\u0000', '\\ud83d', '__proto__', ' ', 'a']
  let out = ''
  const length = Math.floor(next() * 200)
  for (let i = 0; i < length; i++) out += pieces[Math.floor(next() * pieces.length)]
  return out
}

function randomBytes (next: () => number): Buffer {
  const b = Buffer.alloc(Math.floor(next() * 300))
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(next() * 256)
  return b
}

const tokens = createTokens({ secret: 's'.repeat(40), ttlS: 60, clock: { now: () => 1_700_000_000_000, setTimeout: () => null, clearTimeout: () => {} } })

/** Every parser, with a check that its output can be handled without throwing. */
function feed (bytes: Buffer): void {
  const text = bytes.toString('utf8')
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer
  for (const types of [['state'], ['chat']]) {
    const frame = parseFrame(ab, false, types)
    if (frame.ok) JSON.stringify(frame.frame)
    else JSON.stringify(frame)
  }
  const body = parseJsonObject(bytes)
  if (body.ok) {
    JSON.stringify(body.value)
    checkText('content', body.value.content)
    checkId('session_id', body.value.session_id)
  }
  const reply = parseReply(bytes)
  if (reply.ok) JSON.stringify(reply.reply)
  const beat = parseHeartbeat(Buffer.from(bytes), 'w1')
  if (beat.ok) JSON.stringify(beat.heartbeat)
  const resume = parseResume(Buffer.from(bytes))
  if (resume !== null) JSON.stringify(resume)
  const request = parseChatRequest(bytes, 'llm/chat/reply/')
  if (request.ok) JSON.stringify(request.request)
  const hint = hintFrame('s1', bytes, 1)
  if (typeof hint === 'string') JSON.parse(hint)
  tokens.verify(text)
  pickToken(tokens, text.slice(0, 2000), ['bearer', text.slice(0, 2000)])
}

t.test('hand-picked hostile inputs: no parser throws', async (t) => {
  for (const text of HOSTILE) {
    t.doesNotThrow(() => { feed(Buffer.from(text)) }, text.length > 80 ? `${text.slice(0, 60)}… (${text.length} chars)` : text)
  }
})

t.test('the 5,000-deep state frame is refused as too_deep, not crashed on', async (t) => {
  const frame = parseFrame(Buffer.from(`{"type":"state","data":${deep(5000)}}`).buffer as ArrayBuffer, false, ['state'])
  t.match(frame, { ok: false, reason: 'too_deep' })
})

t.test('a NUL in worker text is removed, so PostgreSQL can store it', async (t) => {
  t.match(parseReply('{"v":1,"request_id":"r","type":"done","content":"a\\u0000b"}'), { ok: true, reply: { content: 'ab' } })
  t.match(parseReply('{"v":1,"request_id":"r","type":"chunk","delta":"\\u0000"}'), { ok: true, reply: { delta: '' } })
})

t.test('__proto__ in peer JSON stays an own property and pollutes nothing', async (t) => {
  feed(Buffer.from('{"__proto__":{"polluted":true},"type":"state","data":1}'))
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

t.test('20,000 seeded random inputs (structured text and raw bytes): no parser throws', async (t) => {
  const next = seeded(0x7e7e7)
  let failures = 0
  let first = ''
  for (let i = 0; i < 20_000; i++) {
    const bytes = i % 2 === 0 ? Buffer.from(randomText(next)) : randomBytes(next)
    try { feed(bytes) } catch (err) {
      failures++
      if (first === '') first = `case ${i}: ${bytes.toString('base64').slice(0, 200)}: ${(err as Error).message}`
    }
  }
  t.equal(failures, 0, first)
})
