/**
 * A socket-client process of bench:ws, forked by bench/ws.js (IPC with `serialization:
 * 'advanced'`). It holds its share of the hint sockets, counts and times every hint, runs the
 * streamed-chat load when asked, and answers one message per command (bench/ws/protocol.ts).
 * It exits on `close`, when the parent goes away, or when its lifetime (argv[2], ms) runs out.
 * argv[3] is the orchestrator's epoch base, so hints are timed on one clock.
 */
import { exitAfter, sendToParent } from './lib/ipc.js'
import { runChatLoad } from './ws/chat-load.js'
import { createHintClient } from './ws/hints.js'
import { epochMinusMonoMs, setEpochBase, type ClientCommand, type ClientMessage } from './ws/protocol.js'

const maxLifeMs = Number(process.argv[2] ?? '600000')
/** The orchestrator's epoch base (ms): every hint is timed on one clock (ws/protocol.ts). */
const epochBase = Number(process.argv[3])
const ownBase = epochMinusMonoMs()
if (Number.isFinite(epochBase)) setEpochBase(epochBase)
exitAfter('ws-client', maxLifeMs)

async function send (msg: ClientMessage): Promise<void> { await sendToParent(msg) }

const hints = createHintClient()

async function handle (c: ClientCommand): Promise<void> {
  switch (c.cmd) {
    case 'open':
      await send(await hints.open(c))
      return
    case 'phase':
      hints.startPhase(c.phase, c.maxSeq)
      await send({ type: 'phase-ready', phase: c.phase })
      return
    case 'collect':
      await send(await hints.collect(c.phase, c.published, c.drainMs))
      return
    case 'chat':
      await send(await runChatLoad(c.opts))
      return
    case 'close': {
      const r = await hints.close(c.timeoutMs)
      await send({ type: 'closed', closed: r.closed, still_open: r.stillOpen })
      process.exit(0)
    }
  }
}

// Commands are handled one at a time, in order: the orchestrator waits for each answer anyway.
let queue = Promise.resolve()
process.on('message', (m: ClientCommand) => {
  queue = queue.then(async () => { await handle(m) }).catch(async (err: unknown) => {
    await send({ type: 'error', message: `${m.cmd}: ${(err as Error).stack ?? String(err)}` })
  })
})
process.on('disconnect', () => process.exit(0))
void send({ type: 'hello', pid: process.pid, epoch_minus_mono_ms: ownBase })
