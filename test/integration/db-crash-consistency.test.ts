/**
 * PostgreSQL stopped with `-m immediate` (SIGQUIT to the postmaster: no checkpoint, backends
 * killed, crash recovery on the next start) under concurrent chats, then started again, on a
 * private server. Afterwards: every chat answered 200 has both turns stored exactly once, in
 * order; no turn is stored twice; a chat answered 503 db_unavailable has no answer stored,
 * so nothing shows up later in its history as a completed exchange. The server is the
 * machine's PostgreSQL binaries on a private port (test/fixtures/private-postgres.ts).
 */
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { startPrivatePostgres } from '../fixtures/private-postgres.js'
import { auditStoredChats } from '../fixtures/stored-chats-audit.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'

const CONCURRENCY = 16
const SESSIONS = 8

interface Sent { key: string, content: string, status: number | 'error', error?: string, messageId?: string }

t.test('PostgreSQL stopped -m immediate mid-load and started again: 200s stored once and in order, 503s left no answer', async (t) => {
  const server = await startPrivatePostgres()
  t.teardown(() => server.stop())
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  const gw = await startGateway(t, {
    MQTT_URL: broker.url, DATABASE_URL: server.url, DB_HEALTH_INTERVAL_MS: '200', DB_ACQUIRE_TIMEOUT_MS: '1000',
    DB_STATEMENT_TIMEOUT_MS: '2000', MAX_PENDING_PER_SESSION: '1000'
  })
  await waitFor(() => gw.tether.link.isUp, { what: 'link up' })
  for (let i = 0; i < SESSIONS; i++) await gw.sessionId(`s${i}`)

  const sent: Sent[] = []
  let n = 0
  let stop = false
  const loop = async (): Promise<void> => {
    while (!stop && n < 50_000) {
      const s: Sent = { key: `s${n % SESSIONS}`, content: `m${n++}`, status: 'error' }
      sent.push(s)
      const answer = await gw.chat(s.key, s.content).catch((err: unknown) => err as Error)
      if (answer instanceof Error) { s.error = answer.message; continue }
      s.status = answer.status
      s.error = answer.json?.error
      if (answer.status === 200) s.messageId = answer.json.message_id
      if (answer.status !== 200) await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const loops = Array.from({ length: CONCURRENCY }, async () => await loop())
  const ok = (): number => sent.filter((s) => s.status === 200).length
  await waitFor(() => ok() >= 200, { timeoutMs: 60_000, what: '200 chats answered' })

  const killedAt = sent.length
  await server.crash()
  await waitFor(() => sent.slice(killedAt).some((s) => s.status === 503), { timeoutMs: 20_000, what: 'chats answered 503 while the database is down' })
  await new Promise((resolve) => setTimeout(resolve, 500))
  await server.restart()
  const restartedAt = sent.length
  await waitFor(() => sent.slice(restartedAt).filter((s) => s.status === 200).length >= 100, { timeoutMs: 60_000, what: '100 chats answered after the restart' })
  stop = true
  await Promise.all(loops)

  const statuses = new Map<string, number>()
  for (const s of sent) statuses.set(`${s.status} ${s.error ?? ''}`, (statuses.get(`${s.status} ${s.error ?? ''}`) ?? 0) + 1)
  t.comment(`answers: ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.same(sent.filter((s) => s.status !== 200 && !(s.status === 503 && s.error === 'db_unavailable')).map((s) => `${s.status} ${s.error ?? ''}`), [],
    'every chat was answered 200 or 503 db_unavailable')

  const audit = await auditStoredChats(server.url, sent)
  t.same(audit.duplicates, [], 'no turn is stored twice')
  t.same(audit.answeredButNotStored, [], `every chat answered 200 (${ok()}) has its question and answer, in order, under its message id`)
  t.same(audit.answeredWithout(503), [], `no chat answered 503 (${sent.filter((s) => s.status === 503).length}) has an answer stored`)
  t.same(audit.strays, [], 'nothing stored that was not sent')
})
