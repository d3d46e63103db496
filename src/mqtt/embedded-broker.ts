/**
 * The in-process MQTT 3.1.1 broker (aedes) used when MQTT_URL is unset, so that `npm start`
 * needs nothing installed. Loopback only. If the configured port is taken (commonly by a
 * system Mosquitto on 1883) it says so and takes a free port instead.
 */
import net from 'node:net'
import { Aedes } from 'aedes'
import type { Logger } from '../log.js'

export interface EmbeddedBroker {
  readonly url: string
  readonly port: number
  close: () => Promise<void>
}

function listen (server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => { server.off('listening', onListening); reject(err) }
    const onListening = (): void => {
      server.off('error', onError)
      resolve((server.address() as net.AddressInfo).port)
    }
    server.once('error', onError)
    server.once('listening', onListening)
    server.listen(port, '127.0.0.1')
  })
}

export async function startEmbeddedBroker (options: { port: number, log: Logger }): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker()
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    // Same reason as the client side: Nagle + delayed ACK costs ~40 ms per QoS 1 round trip.
    socket.setNoDelay(true)
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    broker.handle(socket)
  })
  let port: number
  try {
    port = await listen(server, options.port)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || options.port === 0) {
      broker.close()
      throw err
    }
    port = await listen(server, 0)
    options.log.warn({ wanted: options.port, port }, `embedded MQTT broker: port ${options.port} is taken, using free port ${port}`)
  }
  const url = `mqtt://127.0.0.1:${port}`
  options.log.info({ url }, `embedded MQTT broker (aedes, MQTT 3.1.1) listening on ${url}`)
  let closed: Promise<void> | null = null
  return {
    url,
    port,
    close () {
      closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => { broker.close(() => resolve()) })
      })
      return closed
    }
  }
}
