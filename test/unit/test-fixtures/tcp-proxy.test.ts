import net from 'node:net'
import t from 'tap'
import { startTcpProxy, type TcpProxy } from '../../fixtures/tcp-proxy.js'
import { holdsFor, once, waitFor } from '../../fixtures/wait-for.js'

/** The part of a tap test the helpers below need. */
interface Scope {
  teardown (fn: () => unknown): void
}

/** A TCP server that records what each accepted socket receives. */
interface Target {
  port: number
  sockets: net.Socket[]
  received: string[]
}

async function startTarget (t: Scope): Promise<Target> {
  const target: Target = { port: 0, sockets: [], received: [] }
  const server = net.createServer((socket) => {
    const index = target.sockets.push(socket) - 1
    target.received[index] = ''
    socket.setEncoding('utf8')
    socket.on('data', (text: string) => { target.received[index] += text })
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  target.port = (server.address() as net.AddressInfo).port
  t.teardown(async () => {
    for (const socket of target.sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return target
}

async function startProxy (t: Scope, target: Target): Promise<TcpProxy> {
  const proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: target.port })
  t.teardown(() => proxy.close())
  return proxy
}

interface Client {
  socket: net.Socket
  received: () => string
  closed: () => boolean
}

async function connectClient (t: Scope, port: number): Promise<Client> {
  const socket = net.connect({ host: '127.0.0.1', port })
  let text = ''
  let closed = false
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { text += chunk })
  socket.on('close', () => { closed = true })
  socket.on('error', () => {})
  t.teardown(() => { socket.destroy() })
  await once(socket, 'connect')
  return { socket, received: () => text, closed: () => closed }
}

t.test('the proxy forwards bytes in both directions', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)
  t.match(proxy.url, /^mqtt:\/\/127\.0\.0\.1:\d+$/)
  const client = await connectClient(t, proxy.port)

  client.socket.write('ping')
  await waitFor(() => target.received[0] === 'ping', { what: 'the target to receive ping' })
  target.sockets[0]!.write('pong')
  await waitFor(() => client.received() === 'pong', { what: 'the client to receive pong' })
  t.equal(proxy.connections, 1)
})

t.test('pause() stops delivery both ways while the sockets stay open, resume() delivers the held bytes', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)
  const client = await connectClient(t, proxy.port)
  client.socket.write('a')
  await waitFor(() => target.received[0] === 'a', { what: 'the link to carry a first byte' })

  proxy.pause()
  client.socket.write('b')
  target.sockets[0]!.write('c')
  await holdsFor(() => target.received[0] === 'a' && client.received() === '', {
    forMs: 200,
    what: 'no delivery while paused'
  })
  t.notOk(client.closed(), 'the client socket is still open')
  t.notOk(target.sockets[0]!.destroyed, 'the target socket is still open')
  t.equal(proxy.connections, 1)

  proxy.resume()
  await waitFor(() => target.received[0] === 'ab', { what: 'the held client bytes' })
  await waitFor(() => client.received() === 'c', { what: 'the held target bytes' })
})

t.test('a connection opened while paused carries nothing until resume()', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)
  proxy.pause()
  const client = await connectClient(t, proxy.port)
  client.socket.write('hello')
  await holdsFor(() => (target.received[0] ?? '') === '', { forMs: 200, what: 'no delivery on a frozen new link' })

  proxy.resume()
  await waitFor(() => target.received[0] === 'hello', { what: 'the held greeting' })
})

t.test('a hang-up during pause reaches the other side only after resume()', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)
  const client = await connectClient(t, proxy.port)
  await waitFor(() => target.sockets.length === 1, { what: 'the upstream connection' })

  proxy.pause()
  target.sockets[0]!.destroy()
  await holdsFor(() => !client.closed(), { forMs: 200, what: 'the client link staying open' })

  proxy.resume()
  await waitFor(() => client.closed(), { what: 'the client to see the hang-up' })
})

t.test('dropAll() closes every current connection and later ones still work', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)
  const first = await connectClient(t, proxy.port)
  const second = await connectClient(t, proxy.port)
  await waitFor(() => proxy.connections === 2, { what: 'two open connections' })

  proxy.dropAll()
  await waitFor(() => first.closed() && second.closed(), { what: 'both clients to be closed' })
  await waitFor(() => target.sockets.every((socket) => socket.destroyed), { what: 'the upstream sockets to close' })
  await waitFor(() => proxy.connections === 0, { what: 'the count to reach zero' })

  const third = await connectClient(t, proxy.port)
  third.socket.write('again')
  await waitFor(() => target.received.includes('again'), { what: 'a new connection to be forwarded' })
})

t.test('refuse(true) accepts then closes new connections; refuse(false) lets them through', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)

  proxy.refuse(true)
  const refused = await connectClient(t, proxy.port)
  await waitFor(() => refused.closed(), { what: 'the refused client to be closed' })
  t.equal(target.sockets.length, 0, 'nothing reached the target')

  proxy.refuse(false)
  const accepted = await connectClient(t, proxy.port)
  accepted.socket.write('in')
  await waitFor(() => target.received[0] === 'in', { what: 'a connection after refuse(false)' })
})

t.test('a dead target closes the client connection', async (t) => {
  // A port nobody listens on any more.
  const gone = net.createServer().listen(0, '127.0.0.1')
  await once(gone, 'listening')
  const deadPort = (gone.address() as net.AddressInfo).port
  await new Promise((resolve) => gone.close(resolve))

  const proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: deadPort })
  t.teardown(() => proxy.close())
  const client = await connectClient(t, proxy.port)
  await waitFor(() => client.closed(), { what: 'the client to be closed when the target refuses' })
})

t.test('close() closes open connections, stops listening and is idempotent', async (t) => {
  const target = await startTarget(t)
  const proxy = await startProxy(t, target)
  const client = await connectClient(t, proxy.port)
  proxy.pause()

  await Promise.all([proxy.close(), proxy.close()])
  await proxy.close()
  await waitFor(() => client.closed(), { what: 'the client to be closed' })

  const late = net.connect({ host: '127.0.0.1', port: proxy.port })
  const [err] = await once(late, 'error')
  t.match(err, { code: 'ECONNREFUSED' }, 'nothing listens any more')
})
