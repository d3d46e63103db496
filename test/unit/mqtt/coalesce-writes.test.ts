// coalesceWrites: the packets written in one event-loop turn leave in one writev, in order.
import net from 'node:net'
import t, { type Test } from 'tap'
import { coalesceWrites } from '../../../src/mqtt/open-client.js'

async function connectedPair (t: Test): Promise<{ client: net.Socket, received: () => string }> {
  let data = ''
  const server = net.createServer((s) => { s.on('data', (d: Buffer) => { data += d.toString('utf8') }) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  client.setNoDelay(true)
  await new Promise<void>((resolve) => client.once('connect', resolve))
  t.teardown(() => { client.destroy(); server.close() })
  return { client, received: () => data }
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

t.test('writes made in one turn go out together in one writev, in order', async (t) => {
  const { client, received } = await connectedPair(t)
  coalesceWrites(client)
  const calls: Array<{ kind: string, chunks: number }> = []
  const internals = client as unknown as { _writev: (chunks: unknown[], cb: unknown) => unknown, _write: (...a: unknown[]) => unknown }
  const writev = internals._writev.bind(client)
  const write = internals._write.bind(client)
  internals._writev = (chunks: unknown[], cb: unknown) => { calls.push({ kind: 'writev', chunks: chunks.length }); return writev(chunks, cb) }
  internals._write = (...args: unknown[]) => { calls.push({ kind: 'write', chunks: 1 }); return write(...args) }
  client.write('one,')
  client.write('two,')
  client.write('three;')
  t.same(calls, [], 'nothing sent during the turn')
  await turn()
  t.same(calls, [{ kind: 'writev', chunks: 3 }], 'one writev with the three packets')
  client.write('four')
  await turn()
  t.same(calls.at(-1), { kind: 'write', chunks: 1 }, 'a lone write in a later turn goes out by itself')
  for (let i = 0; i < 100 && received().length < 18; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(received(), 'one,two,three;four', 'all of it arrives, in order')
})

t.test('a write on a destroyed socket neither corks nor throws', async (t) => {
  const { client } = await connectedPair(t)
  coalesceWrites(client)
  client.on('error', () => {})
  client.destroy()
  t.doesNotThrow(() => { client.write('late') })
  await turn()
  t.equal(client.writableCorked, 0, 'not left corked')
})
