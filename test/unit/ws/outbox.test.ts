import t from 'tap'
import { createOutbox, type OutboxData } from '../../../src/ws/outbox.js'

/** A socket that records what it sent, and whether each send was inside a cork. */
function fakeSocket () {
  const data: OutboxData = { closed: false, outbox: null, replay: 'off' }
  const sent: Array<{ frame: any, corked: boolean }> = []
  let corked = false
  const ws = {
    getUserData: () => data,
    cork (fn: () => void) { corked = true; try { fn() } finally { corked = false } return ws },
    send (text: string) { sent.push({ frame: JSON.parse(text), corked }); return 1 }
  }
  return { ws: ws as any, data, sent, frames: () => sent.map((s) => s.frame) }
}

/** A scheduler run by hand, so the test says when "the next turn of the event loop" comes. */
function manualSchedule () {
  const due: Array<() => void> = []
  return { schedule: (fn: () => void) => { due.push(fn) }, run () { for (const fn of due.splice(0)) fn() }, get pending () { return due.length } }
}

t.test('outside a replay every frame goes out at once, corked', async (t) => {
  const tick = manualSchedule()
  const { send } = createOutbox(tick.schedule)
  const s = fakeSocket()
  send(s.ws, { n: 1 })
  send(s.ws, { n: 2 })
  t.same(s.frames(), [{ n: 1 }, { n: 2 }])
  t.ok(s.sent.every((x) => x.corked))
  t.equal(tick.pending, 0, 'nothing scheduled')
})

t.test('a replay sends its first frame at once and the rest on the next turn, in order', async (t) => {
  const tick = manualSchedule()
  const { send } = createOutbox(tick.schedule)
  const a = fakeSocket()
  const b = fakeSocket()
  for (const s of [a, b]) {
    s.data.replay = 'first'
    for (let seq = 4; seq <= 6; seq++) send(s.ws, { seq })
    s.data.replay = 'off'
  }
  t.same(a.frames(), [{ seq: 4 }], 'first socket: only its first replayed frame so far')
  t.same(b.frames(), [{ seq: 4 }], 'second socket: its first frame did not wait for the first socket\'s replay')
  // A live chunk and an error frame for socket a arrive before the deferred frames are out.
  send(a.ws, { seq: 7 })
  send(a.ws, { type: 'error' })
  t.same(a.frames(), [{ seq: 4 }], 'later frames wait behind the deferred ones')
  t.equal(tick.pending, 1, 'one flush for every socket')
  tick.run()
  t.same(a.frames(), [{ seq: 4 }, { seq: 5 }, { seq: 6 }, { seq: 7 }, { type: 'error' }])
  t.same(b.frames(), [{ seq: 4 }, { seq: 5 }, { seq: 6 }])
  t.ok([...a.sent, ...b.sent].every((x) => x.corked), 'the flush is corked too')
  t.equal(a.data.outbox, null)
  send(a.ws, { seq: 8 })
  t.same(a.frames().at(-1), { seq: 8 }, 'once flushed, frames go out at once again')
})

t.test('a socket that closes before the flush gets nothing more, and is forgotten', async (t) => {
  const tick = manualSchedule()
  const { send } = createOutbox(tick.schedule)
  const s = fakeSocket()
  s.data.replay = 'first'
  send(s.ws, { seq: 1 })
  send(s.ws, { seq: 2 })
  s.data.replay = 'off'
  s.data.closed = true
  send(s.ws, { seq: 3 })
  tick.run()
  t.same(s.frames(), [{ seq: 1 }])
  t.equal(s.data.outbox, null, 'the waiting frames are dropped with the socket')
})
