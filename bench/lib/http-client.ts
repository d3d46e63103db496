/**
 * A minimal HTTP/1.1 client connection on a raw no-delay socket: one request at a time,
 * keep-alive, Content-Length or chunked responses. It exists because the load generator shares
 * two cores with the gateway, the broker and the worker; every microsecond it spends is taken
 * from the thing being measured, and a bare socket costs far less per request than fetch.
 */
import net from 'node:net'

export interface Response {
  readonly status: number
  readonly body: Buffer
}

export type OnResponse = (err: Error | undefined, res: Response | undefined) => void

const CRLFCRLF = Buffer.from('\r\n\r\n')

export class HttpConnection {
  private socket: net.Socket | undefined
  private buf: Buffer = Buffer.alloc(0)
  private cb: OnResponse | undefined
  private keepAlive = true
  closed = false

  constructor (private readonly host: string, private readonly port: number) {}

  /** Sends one pre-serialised request; `cb` gets the response or the transport error. */
  send (request: Buffer, cb: OnResponse): void {
    if (this.cb !== undefined) throw new Error('HttpConnection: one request at a time')
    this.cb = cb
    if (this.socket === undefined || this.socket.destroyed || !this.keepAlive) this.open()
    this.socket?.write(request)
  }

  /** Resolves once the TCP connection is up (or at once if it is), rejects on error or after `timeoutMs`. */
  async connected (timeoutMs = 5000): Promise<void> {
    const s = this.socket
    if (s === undefined || s.destroyed) throw new Error('not connected')
    if (!s.connecting) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('connect timeout')) }, timeoutMs)
      s.once('connect', () => { clearTimeout(timer); resolve() })
      s.once('error', (err) => { clearTimeout(timer); reject(err) })
    })
  }

  destroy (): void {
    this.closed = true
    this.socket?.destroy()
    this.socket = undefined
  }

  private open (): void {
    this.socket?.destroy()
    this.buf = Buffer.alloc(0)
    this.keepAlive = true
    const s = net.createConnection({ host: this.host, port: this.port })
    s.setNoDelay(true)
    // Events from a socket we already replaced must not touch the current request.
    s.on('data', (chunk: Buffer) => { if (this.socket === s) this.onData(chunk) })
    s.on('error', (err) => { if (this.socket === s) this.fail(err) })
    s.on('close', () => { if (this.socket === s) this.fail(new Error('connection closed')) })
    this.socket = s
  }

  private fail (err: Error): void {
    this.socket = undefined
    const cb = this.cb
    this.cb = undefined
    cb?.(err, undefined)
  }

  private onData (chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    const res = this.parse()
    if (res === undefined) return
    const cb = this.cb
    this.cb = undefined
    if (!this.keepAlive) { this.socket?.destroy(); this.socket = undefined }
    cb?.(undefined, res)
  }

  /** A complete response from `buf`, or undefined while more bytes are needed. */
  private parse (): Response | undefined {
    const buf = this.buf
    const headEnd = buf.indexOf(CRLFCRLF)
    if (headEnd < 0) return undefined
    const head = buf.toString('latin1', 0, headEnd)
    const status = Number(head.slice(9, 12))
    let length = -1
    let chunked = false
    for (const line of head.split('\r\n')) {
      const colon = line.indexOf(':')
      if (colon < 0) continue
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim().toLowerCase()
      if (name === 'content-length') length = Number(value)
      else if (name === 'transfer-encoding') chunked = value.includes('chunked')
      else if (name === 'connection') this.keepAlive = value !== 'close'
    }
    const bodyStart = headEnd + 4
    if (chunked) {
      const parts: Buffer[] = []
      let at = bodyStart
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', at)
        if (lineEnd < 0) return undefined
        const size = parseInt(buf.toString('latin1', at, lineEnd), 16)
        if (size === 0) {
          // No trailers from our servers: the terminator is "0\r\n\r\n".
          if (buf.length < lineEnd + 4) return undefined
          this.buf = buf.subarray(lineEnd + 4)
          return { status, body: Buffer.concat(parts) }
        }
        if (buf.length < lineEnd + 2 + size + 2) return undefined
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size))
        at = lineEnd + 2 + size + 2
      }
    }
    if (length < 0) length = 0 // no body framing on a keep-alive response: treat as empty
    if (buf.length < bodyStart + length) return undefined
    this.buf = buf.subarray(bodyStart + length)
    return { status, body: buf.subarray(bodyStart, bodyStart + length) }
  }
}

/** A serialised POST; `headers` are extra lines such as `authorization: Bearer <token>`. */
export function postRequest (host: string, port: number, path: string, json: string, keepAlive = true, headers: Record<string, string> = {}): Buffer {
  const body = Buffer.from(json)
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')
  return Buffer.concat([
    Buffer.from(`POST ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nContent-Type: application/json\r\n${extra}` +
      `Content-Length: ${body.length}\r\nConnection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`, 'latin1'),
    body
  ])
}

/** A serialised GET with keep-alive. */
export function getRequest (host: string, port: number, path: string): Buffer {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: keep-alive\r\n\r\n`, 'latin1')
}

/** A transport failure's name for a tally: its errno code, `closed`, or `transport`. */
export function classifyError (err: Error | undefined): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code !== undefined) return code
  return err?.message === 'connection closed' ? 'closed' : 'transport'
}
