import t from 'tap'
import { createSseDecoder, SseLineTooLongError } from '../../../src/llm-worker/sse.js'

/** Feeds `pieces` one by one and returns every event's data, the end included. */
function decode (pieces: string[]): string[] {
  const d = createSseDecoder()
  return [...pieces.flatMap((p) => d.push(p)), ...d.end()]
}

t.test('each blank-line-terminated event yields its data, in order', async (t) => {
  t.same(decode(['data: one\n\ndata: two\n\n']), ['one', 'two'])
})

t.test('an event split anywhere across reads, even inside a CRLF, decodes the same', async (t) => {
  const text = 'data: {"a":1}\r\n\r\ndata: two\r\n\r\n'
  for (let i = 1; i < text.length; i++) {
    t.same(decode([text.slice(0, i), text.slice(i)]), ['{"a":1}', 'two'], `split at ${i}`)
  }
  t.same(decode(text.split('')), ['{"a":1}', 'two'], 'one character per read')
})

t.test('CR, LF and CRLF all end lines', async (t) => {
  t.same(decode(['data: a\r\rdata: b\n\ndata: c\r\n\r\n']), ['a', 'b', 'c'])
})

t.test('comments, other fields and a data buffer that stays empty dispatch nothing', async (t) => {
  t.same(decode([': keep-alive\n\nevent: ping\nid: 7\nretry: 100\n\n']), [])
})

t.test('several data lines of one event are joined with newlines', async (t) => {
  t.same(decode(['data: line 1\ndata: line 2\ndata\n\n']), ['line 1\nline 2\n'])
})

t.test('only one space after the colon is removed, and a line without colon is a field with an empty value', async (t) => {
  t.same(decode(['data:  two spaces\n\ndata:none\n\n']), [' two spaces', 'none'])
})

t.test('a byte order mark before the first line is ignored', async (t) => {
  t.same(decode(['\uFEFFdata: x\n\n']), ['x'])
})

t.test('a last event without its blank line is still delivered at the end of the stream', async (t) => {
  t.same(decode(['data: a\n\ndata: [DONE]']), ['a', '[DONE]'])
})

t.test('an endless line is refused instead of buffered without bound', async (t) => {
  const d = createSseDecoder(16)
  t.same(d.push('data: 0123456789'), [])
  t.throws(() => d.push('abcdef'), SseLineTooLongError)
})
