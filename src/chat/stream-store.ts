/**
 * Resumable streams (contract v1.1): every streamed chat (WebSocket, server-sent events) keeps
 * its chunks and its end in a replay buffer, so a client whose connection dropped can come
 * back (`resume` with `after_seq`, `Last-Event-ID`) and get every chunk after the last it saw,
 * then the end, with no gap and no repeat. While its client is away the chat itself waits
 * STREAM_RESUME_GRACE_MS (the pending-request machine's `detached` state); a finished stream
 * stays resumable for STREAM_RETAIN_MS. All buffers together hold at most
 * STREAM_BUFFER_MAX_BYTES of text: past it the oldest finished streams go first, then the
 * stream that grew it, and a stream whose buffer went can no longer be resumed at all
 * (stream_not_found), never replayed with a hole in it.
 */
import type { Clock } from '../clock.js'
import type { ContractFailure } from '../failure.js'
import type { ChatSink } from './run-chat.js'

export type StreamEnd =
  | { type: 'done', messageId: string, content: string, latencyMs: number }
  | { type: 'error', failure: ContractFailure }

/** Where a stream's frames go: the one connection its client has now. */
export interface StreamListener {
  /** The chat was accepted and published: a stream that can be resumed exists from now on. */
  start?: () => void
  chunk: (delta: string, seq: number) => void
  end: (end: StreamEnd) => void
  /** Another connection resumed the stream: this one gets nothing more and should let go. */
  replaced?: () => void
}

export type AttachResult = 'attached' | 'ended' | 'not_replayable' | 'beyond_end'

export interface Stream {
  readonly requestId: string
  /** What runChat writes to. */
  readonly sink: ChatSink
  readonly settled: boolean
  /** Chunks so far (the last seq). */
  readonly chunks: number
  /**
   * Replays every chunk after `afterSeq` to `listener` (and the end, if the stream has one),
   * then makes it the stream's listener. Nothing is sent unless the whole rest can be.
   */
  attach: (listener: StreamListener, afterSeq: number) => AttachResult
  /** The listener's connection went (a newer listener is left alone). */
  detach: (listener: StreamListener) => void
  /** Stop pressed: the chat ends as `cancelled` (its stream with an error `cancelled`). */
  cancel: () => 'cancelled' | 'already_settled'
}

/** What the store needs from the chat path: start and stop the resume grace of a chat in flight. */
export interface StreamChats {
  detach: (requestId: string) => boolean
  attach: (requestId: string) => boolean
  /** False when the chat had already ended (its end may still be on its way, e.g. being stored). */
  cancel: (requestId: string, reason: 'client_cancelled') => boolean
}

export interface StreamStoreOptions {
  chats: StreamChats
  clock: Clock
  retainMs: number
  maxBytes: number
  /** Turns whatever a chat failed with into the contract's failure (src/failure.ts). */
  describe: (err: unknown, requestId: string) => ContractFailure
  onResume?: (result: 'attached' | 'ended' | 'not_found') => void
}

export interface StreamStore {
  start: () => void
  stop: () => void
  /**
   * A new stream for a chat about to start, owned by `ownerId` (null: anyone with its id, relay
   * mode). `quietThrough`: chunks up to this seq are kept but not sent to `listener` (a stream
   * taken over from another gateway is re-sent from the first chunk; the client has these).
   */
  open: (requestId: string, ownerId: string | null, listener: StreamListener, quietThrough?: number) => Stream
  /** A finished stream's every chunk and its end, if it is still kept whole (for another gateway). */
  snapshot: (requestId: string, ownerId: string | null) => { chunks: string[], end: StreamEnd } | null
  /** The stream, if it exists and `ownerId` may see it. */
  get: (requestId: string, ownerId: string | null) => Stream | null
  /** A client's resume: the stream found and attached (see Stream.attach), or not_found; counted. */
  resume: (requestId: string, ownerId: string | null, listener: StreamListener, afterSeq: number) => { stream: Stream, result: AttachResult } | 'not_found'
  /** Streams kept (live and finished). */
  readonly size: number
  /** Bytes of chunk text held by all replay buffers. */
  readonly bytes: number
}

interface Entry extends Stream {
  ownerId: string | null
  parts: string[] | null
  partBytes: number
  /** Bytes the end holds (a done's whole answer), counted while the stream is kept. */
  endBytes: number
  end: StreamEnd | null
  listener: StreamListener | null
  /** The chat was detached (or cancelled) before it was submitted; do it once it is. */
  detachOnSubmit: boolean
  cancelOnSubmit: boolean
  submittedYet: boolean
  expiresAt: number
  quietThrough: number
}

/** UTF-16 code units as bytes: what the heap holds of a string is at least this. */
function sizeOf (text: string): number { return text.length * 2 }

export function createStreamStore (options: StreamStoreOptions): StreamStore {
  const { clock } = options
  const streams = new Map<string, Entry>()
  // Finished streams in the order they finished: the sweep and the eviction take the oldest.
  // A queue with a head index: Array.shift() copies large arrays (60,000 finished streams at
  // 1,000 chats/s), and this is walked once a second.
  let finished: Entry[] = []
  let head = 0
  const finishedCount = (): number => finished.length - head
  function takeOldest (): Entry {
    const entry = finished[head++] as Entry
    if (head > 1024 && head * 2 > finished.length) { finished = finished.slice(head); head = 0 }
    return entry
  }
  let bytes = 0
  let sweeper: unknown = null

  function dropBuffer (entry: Entry): void {
    if (entry.parts === null) return
    bytes -= entry.partBytes
    entry.parts = null
    entry.partBytes = 0
  }

  function remove (entry: Entry): void {
    dropBuffer(entry)
    bytes -= entry.endBytes
    entry.endBytes = 0
    if (streams.get(entry.requestId) === entry) streams.delete(entry.requestId)
  }

  /** Bytes the finished streams hold: what evicting all of them could free. */
  let finishedBytes = 0

  /**
   * Makes room for `need` bytes by dropping finished streams, oldest first, only when that can
   * make it fit: a chunk that cannot fit anyway must not wipe every other user's finished
   * streams on its way to losing its own buffer.
   */
  function makeRoom (need: number): boolean {
    if (bytes + need <= options.maxBytes) return true
    if (bytes - finishedBytes + need > options.maxBytes) return false
    while (bytes + need > options.maxBytes && finishedCount() > 0) evict(takeOldest())
    return bytes + need <= options.maxBytes
  }

  function evict (entry: Entry): void {
    if (!streams.has(entry.requestId)) return
    finishedBytes -= entry.partBytes + entry.endBytes
    remove(entry)
  }

  function sweep (): void {
    const now = clock.now()
    while (finishedCount() > 0 && (finished[head] as Entry).expiresAt <= now) evict(takeOldest())
    sweeper = clock.setTimeout(sweep, 1000)
  }

  function finish (entry: Entry, end: StreamEnd | null): void {
    if (entry.settled) return
    entry.end = end
    ;(entry as { settled: boolean }).settled = true
    const listener = entry.listener
    // Nothing is kept of a finished stream's connection.
    entry.listener = null
    if (end === null || !entry.submittedYet) {
      // Ended with nobody to tell (the client left and did not come back), or refused before it
      // was ever published (a cap, an unknown session): nothing to resume.
      remove(entry)
    } else {
      entry.expiresAt = clock.now() + options.retainMs
      if (end.type === 'done') {
        entry.endBytes = sizeOf(end.content)
        bytes += entry.endBytes
      }
      finishedBytes += entry.partBytes + entry.endBytes
      finished.push(entry)
    }
    if (end !== null && listener !== null) listener.end(end)
    // Handed over to another gateway: a connection still following it here has nothing more coming.
    else if (listener !== null) listener.replaced?.()
  }

  function sinkOf (entry: Entry): ChatSink {
    return {
      chunk (delta, seq) {
        ;(entry as { chunks: number }).chunks = seq
        if (entry.parts !== null) {
          const size = sizeOf(delta)
          if (makeRoom(size)) {
            entry.parts.push(delta)
            entry.partBytes += size
            bytes += size
          } else {
            dropBuffer(entry)
          }
        }
        if (seq > entry.quietThrough) entry.listener?.chunk(delta, seq)
      },
      done (reply) { finish(entry, { type: 'done', ...reply }) },
      fail (err) { finish(entry, { type: 'error', failure: options.describe(err, entry.requestId) }) },
      abandoned () { finish(entry, null) },
      submitted () {
        entry.submittedYet = true
        entry.listener?.start?.()
        if (entry.cancelOnSubmit) options.chats.cancel(entry.requestId, 'client_cancelled')
        else if (entry.detachOnSubmit) { entry.detachOnSubmit = false; options.chats.detach(entry.requestId) }
      },
      // A stream is never "gone" before its chat ends: a detached client may come back.
      gone: () => false
    }
  }

  function get (requestId: string, ownerId: string | null): Entry | null {
    const entry = streams.get(requestId)
    if (entry === undefined) return null
    if (entry.ownerId !== null && entry.ownerId !== ownerId) return null
    return entry
  }

  return {
    start () { if (sweeper === null) sweeper = clock.setTimeout(sweep, 1000) },
    stop () {
      if (sweeper !== null) clock.clearTimeout(sweeper)
      sweeper = null
    },
    open (requestId, ownerId, listener, quietThrough = 0) {
      const entry = {
        quietThrough,
        requestId,
        ownerId,
        settled: false,
        chunks: 0,
        parts: [] as string[] | null,
        partBytes: 0,
        endBytes: 0,
        end: null,
        listener,
        detachOnSubmit: false,
        cancelOnSubmit: false,
        submittedYet: false,
        expiresAt: 0
      } as unknown as Entry
      ;(entry as { sink: ChatSink }).sink = sinkOf(entry)
      entry.attach = (next, afterSeq) => {
        if (afterSeq > entry.chunks) return 'beyond_end'
        if (entry.parts === null && afterSeq < entry.chunks) return 'not_replayable'
        const parts = entry.parts ?? []
        entry.quietThrough = 0
        for (let seq = afterSeq + 1; seq <= entry.chunks; seq++) next.chunk(parts[seq - 1] as string, seq)
        if (entry.end !== null) { next.end(entry.end); return 'ended' }
        const wasAway = entry.listener === null
        const previous = entry.listener
        entry.listener = next
        previous?.replaced?.()
        if (wasAway) {
          if (entry.submittedYet) options.chats.attach(requestId)
          else entry.detachOnSubmit = false
        }
        return 'attached'
      }
      entry.cancel = () => {
        if (entry.settled) return 'already_settled'
        if (!entry.submittedYet) { entry.cancelOnSubmit = true; return 'cancelled' }
        // False: the chat has ended and its end is on its way (a done being stored).
        return options.chats.cancel(requestId, 'client_cancelled') ? 'cancelled' : 'already_settled'
      }
      entry.detach = (gone) => {
        if (entry.listener !== gone || entry.settled) return
        entry.listener = null
        if (entry.submittedYet) options.chats.detach(requestId)
        else entry.detachOnSubmit = true
      }
      streams.set(requestId, entry)
      return entry
    },
    get,
    snapshot (requestId, ownerId) {
      const entry = get(requestId, ownerId)
      if (entry === null || entry.end === null || entry.parts === null) return null
      return { chunks: entry.parts.slice(), end: entry.end }
    },
    resume (requestId, ownerId, listener, afterSeq) {
      const stream = get(requestId, ownerId)
      const result = stream === null ? 'not_replayable' : stream.attach(listener, afterSeq)
      if (result === 'attached' || result === 'ended') options.onResume?.(result)
      else if (result === 'not_replayable') options.onResume?.('not_found')
      return stream === null ? 'not_found' : { stream, result }
    },
    get size () { return streams.size },
    get bytes () { return bytes }
  }
}
