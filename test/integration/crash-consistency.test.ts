/**
 * Nothing acknowledged is lost, nothing is stored twice: chats under concurrent load against
 * the real PostgreSQL, then the gateway killed with SIGKILL mid-load. Afterwards every chat that
 * was answered 200 has both turns stored exactly once, in order, under the message id it was
 * given; no turn is stored twice; chats cut off by the kill left at most their user turn.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { createTestDatabase } from '../fixtures/database.js'
import { freePort } from '../fixtures/ports.js'
import { spawnTs, waitExit } from '../fixtures/run-ts.js'
import { auditStoredChats } from '../fixtures/stored-chats-audit.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

const CONCURRENCY = 32
const SESSIONS = 8
/** Answered chats before the kill: enough that batches of many writes were in flight. */
const ANSWERED_BEFORE_KILL = 300

interface Sent { sessionId: string, content: string, status: number | 'cut', messageId?: string }

t.test('SIGKILL under load: every chat answered 200 has both turns stored once, in order; nothing is stored twice', async (t) => {
  const db = await createTestDatabase(t)
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  const dataDir = mkdtempSync(join(tmpdir(), 'tether-crash-'))
  chmodSync(dataDir, 0o755)
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const port = await freePort()
  const child = spawnTs('src/main.ts', {
    PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'silent', MQTT_URL: broker.url, DATABASE_URL: db.url, DATA_DIR: dataDir,
    AUTH_SECRET: 'crash-test-secret-crash-test-secret-0123456789', THREADS: '1', THREAD_TASK_TIMEOUT_MS: '60000', PASSWORD_HASH_COST: '12',
    MAX_PENDING_PER_SESSION: '1000', MAX_PENDING_PER_USER: '10000'
  })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = waitExit(child, 120_000)
  const base = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${base}/readyz`).catch(() => null))?.status === 200, { timeoutMs: 60_000, what: 'the gateway ready' })

  const post = async (path: string, body: unknown, token?: string): Promise<{ status: number, json: any }> => {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body)
    })
    return { status: res.status, json: await res.json().catch(() => null) }
  }
  t.equal((await post('/api/auth/register', { username: 'crash', password: 'correct horse battery' })).status, 201)
  const login = await post('/api/auth/login', { username: 'crash', password: 'correct horse battery' })
  const token = login.json.token as string
  const sessions: string[] = []
  for (let i = 0; i < SESSIONS; i++) sessions.push((await post('/api/chatbot/sessions', { title: `s${i}` }, token)).json.id)

  const sent: Sent[] = []
  let n = 0
  let killed = false
  const loop = async (): Promise<void> => {
    while (!killed && n < 20_000) {
      const s: Sent = { sessionId: sessions[n % SESSIONS] as string, content: `m${n++}`, status: 'cut' }
      sent.push(s)
      try {
        const answer = await post('/api/chatbot/messages', { session_id: s.sessionId, content: s.content }, token)
        s.status = answer.status
        if (answer.status === 200) s.messageId = answer.json.message_id
      } catch {
        return // the connection died with the gateway
      }
    }
  }
  const loops = Array.from({ length: CONCURRENCY }, async () => await loop())
  await waitFor(() => sent.filter((s) => s.status === 200).length >= ANSWERED_BEFORE_KILL, { timeoutMs: 60_000, what: `${ANSWERED_BEFORE_KILL} chats answered` })
  killed = true
  child.kill('SIGKILL')
  await Promise.all(loops)
  t.equal((await exited).signal, 'SIGKILL')

  const answered = sent.filter((s) => s.status === 200)
  t.ok(answered.length >= ANSWERED_BEFORE_KILL, `${answered.length} chats answered 200, ${sent.filter((s) => s.status === 'cut').length} cut off by the kill`)
  t.same(sent.filter((s) => s.status !== 200 && s.status !== 'cut').map((s) => s.status), [], 'no other answer before the kill')
  const audit = await auditStoredChats(db.url, sent)
  t.same(audit.duplicates, [], 'no turn is stored twice')
  t.same(audit.answeredButNotStored, [], 'every chat answered 200: its question and answer stored, in order, on its session, under the id it was given')
  t.same(audit.strays, [], 'nothing stored that was not sent')
  t.same(audit.answersWithoutQuestion, [], 'no answer without its question')
})
