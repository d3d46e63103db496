import t from 'tap'
import { parseChatRequest } from '../../../src/llm-worker/request-envelope.js'

const REPLY_PREFIX = 'llm/chat/reply/'
const good = {
  v: 1,
  request_id: 'r1',
  session_id: 's1',
  user_id: 'u1',
  content: 'hi',
  history: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b', extra: true }],
  reply_to: 'llm/chat/reply/tether-a1',
  deadline: 1000,
  future_field: 'ignored'
}
const parse = (value: unknown): ReturnType<typeof parseChatRequest> => parseChatRequest(JSON.stringify(value), REPLY_PREFIX)

t.test('a well-formed request parses, keeping only the protocol\'s fields', async (t) => {
  t.same(parse(good), {
    ok: true,
    request: {
      v: 1, request_id: 'r1', session_id: 's1', user_id: 'u1', content: 'hi',
      history: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }],
      reply_to: 'llm/chat/reply/tether-a1', deadline: 1000
    }
  })
})

t.test('a missing history is an empty one', async (t) => {
  const { history: _history, ...rest } = good
  const parsed = parse(rest)
  t.equal(parsed.ok && parsed.request.history.length, 0)
})

t.test('another protocol version is ignored, not an error', async (t) => {
  t.same(parse({ ...good, v: 2 }), { ok: false, reason: 'version' })
})

t.test('garbage is malformed with nowhere to reply', async (t) => {
  t.match(parseChatRequest('not json', REPLY_PREFIX), { ok: false, reason: 'malformed', problem: 'not JSON' })
  t.notOk('replyTo' in parseChatRequest('[1]', REPLY_PREFIX))
})

t.test('a bad field is malformed, with the reply address when request_id and reply_to are usable', async (t) => {
  t.match(parse({ ...good, content: 5 }), { ok: false, reason: 'malformed', problem: /content/, requestId: 'r1', replyTo: good.reply_to })
  t.match(parse({ ...good, deadline: '1000' }), { ok: false, problem: /deadline/, requestId: 'r1' })
  t.match(parse({ ...good, history: [{ role: 'system', content: 'x' }] }), { ok: false, problem: /history/, requestId: 'r1' })
  t.match(parse({ ...good, session_id: undefined }), { ok: false, problem: /session_id/ })
})

t.test('reply_to must be a reply topic under the prefix, so a request cannot make the worker publish anywhere else', async (t) => {
  for (const replyTo of ['llm/chat/request', 'llm/templates', 'other/chat/reply/x', 'llm/chat/reply/', 'llm/chat/reply/a/b', 'llm/chat/reply/#', 'llm/chat/reply/+', 5]) {
    const parsed = parse({ ...good, reply_to: replyTo })
    t.match(parsed, { ok: false, reason: 'malformed', problem: /reply_to/ }, String(replyTo))
    t.notOk('replyTo' in parsed, 'and no error reply goes there')
  }
})

t.test('an invalid request_id is malformed with nowhere to reply', async (t) => {
  const parsed = parse({ ...good, request_id: 'a/b' })
  t.match(parsed, { ok: false, problem: /request_id/ })
  t.notOk('replyTo' in parsed)
})
