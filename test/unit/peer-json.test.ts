import t from 'tap'
import { MAX_JSON_DEPTH, nestsDeeperThan, parsePeerJson } from '../../src/peer-json.js'

const nested = (depth: number, open = '[', close = ']'): string => open.repeat(depth) + close.repeat(depth)

t.test('JSON nested deeper than the bound is refused before it is parsed, at any depth', async (t) => {
  t.same(parsePeerJson(nested(MAX_JSON_DEPTH + 1)), { ok: false, reason: 'too_deep' })
  t.same(parsePeerJson(nested(1_000_000)), { ok: false, reason: 'too_deep' }, 'a million levels: refused, no stack overflow')
  t.same(parsePeerJson(`{"a":${nested(5000)}}`), { ok: false, reason: 'too_deep' }, 'inside an object')
  const ok = parsePeerJson(nested(MAX_JSON_DEPTH))
  t.equal(ok.ok, true, 'exactly the bound is accepted')
  if (ok.ok) t.doesNotThrow(() => JSON.stringify(ok.value), 'and what is accepted can be serialised again')
})

t.test('brackets inside strings do not count, escaped quotes included', async (t) => {
  t.equal(nestsDeeperThan(JSON.stringify({ a: '['.repeat(10_000) }), 3), false)
  t.equal(nestsDeeperThan(JSON.stringify({ a: '\\"[[[[' + '"'.repeat(3) }), 1), false)
  t.equal(nestsDeeperThan('{"a":"\\\\"}', 1), false, 'an escaped backslash before the closing quote')
  t.equal(nestsDeeperThan('[[{"a":[1]}]]', 3), true)
})

t.test('anything that is not JSON is malformed, never a throw', async (t) => {
  for (const text of ['', '{', '{"a":}', 'undefined', '\u0000', '{"a":1}x', '[' + ']'.repeat(10)]) {
    t.same(parsePeerJson(text), { ok: false, reason: 'malformed' }, JSON.stringify(text.slice(0, 20)))
  }
})
