/**
 * The live status page (/ and /status) in headless Chromium (Debian's `chromium`, driven by
 * playwright-core): it loads with no console error, shows the link `connected`, then the
 * outage once the broker is gone. Screenshots of both are saved under test-artifacts/.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import t from 'tap'
import { startTestBroker } from '../fixtures/broker.js'
import { startGateway } from '../fixtures/gateway.js'
import { echo, startScriptedWorker } from '../fixtures/scripted-worker.js'
import { waitFor } from '../fixtures/wait-for.js'
import { connect, wsUrl } from '../fixtures/ws-client.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url))
// The page polls once a second; a few polls of slack for a loaded machine.
const PAGE_UPDATE_MS = 10_000
// Flags for a browser that must not reach out to the internet (there is none here) or to a
// GPU, and runs as root in a container (no sandbox).
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

/**
 * Polls the element's text from the test side (the page's Content-Security-Policy forbids
 * evaluating strings in it, so Playwright's waitForFunction with an expression cannot run).
 */
async function until (page: Page, selector: string, ok: (text: string) => boolean, what: string): Promise<void> {
  await waitFor(async () => ok((await page.locator(selector).textContent()) ?? ''), { timeoutMs: PAGE_UPDATE_MS, what })
}

if (!existsSync(CHROMIUM)) {
  t.fail(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does when it is missing)`)
} else {
  await run()
}

async function run (): Promise<void> {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  const gw = await startGateway(t, { MQTT_URL: broker.url })
  const worker = await startScriptedWorker({ url: broker.url, behaviour: echo })
  t.teardown(() => worker.stop())
  await waitFor(() => gw.tether.link.isUp, { timeoutMs: 15_000, what: 'the MQTT link to come up' })

  t.test('/api/status reports the link, the database and the counters the page shows', async (t) => {
    for (let i = 0; i < 3; i++) t.equal((await gw.chat('status', `hello ${i}`)).status, 200, 'a chat')
    t.equal((await gw.request('GET', '/api/chatbot/sessions/nope/messages')).status, 404, 'a 4xx')
    const answer = await gw.request('GET', '/api/status')
    t.equal(answer.status, 200)
    t.match(answer.headers['cache-control'], /no-store/)
    const report = answer.json
    t.equal(report.link.state, 'connected')
    t.same(report.outage, [], 'no outage')
    t.equal(report.db.status, 'up')
    t.ok(report.link.recent_transitions.some((tr: { to: string }) => tr.to === 'connected'), 'the transition to connected is listed')
    t.ok(report.http_responses['2xx'] >= 3 + 1, 'the chats and the session are counted as 2xx')
    t.ok(report.http_responses['4xx'] >= 1, 'the 404 is counted as 4xx')
    t.ok(report.chats.done >= 3, 'the chats are counted by outcome')
    const again = (await gw.request('GET', '/api/status')).json
    t.equal(again.http_responses['2xx'], report.http_responses['2xx'], 'polling /api/status does not count itself')
  })

  t.test('/ and /status serve the same self-contained page', async (t) => {
    const root = await gw.request('GET', '/', undefined, { anonymous: true })
    const status = await gw.request('GET', '/status', undefined, { anonymous: true })
    t.equal(root.status, 200)
    t.equal(status.status, 200)
    t.match(root.headers['content-type'], /^text\/html/)
    t.match(root.headers['content-security-policy'], /default-src 'none'/)
    t.equal(root.text, status.text)
    t.notMatch(root.text, /(src|href)=["']?(https?:)?\/\//, 'no external asset')
  })

  t.test('in Chromium the page shows connected, then the outage when the broker stops', async (t) => {
    mkdirSync(ARTIFACTS, { recursive: true })
    const profile = mkdtempSync(join(tmpdir(), 'tether-chromium-'))
    let context: BrowserContext
    try {
      context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 } })
    } catch (err) {
      rmSync(profile, { recursive: true, force: true })
      throw err
    }
    t.teardown(async () => {
      await context.close()
      rmSync(profile, { recursive: true, force: true })
    })
    const page: Page = context.pages()[0] ?? await context.newPage()
    const problems: string[] = []
    page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`) })
    page.on('pageerror', (err) => { problems.push(`page error: ${err.message}`) })
    page.on('requestfailed', (request) => { problems.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ''}`) })

    const response = await page.goto(`http://127.0.0.1:${gw.port}/status`)
    t.equal(response?.status(), 200, 'the page loads')
    await until(page, '#link-state', (text) => text === 'connected', 'the link state to show connected')
    t.pass('the link state shows connected')
    // Live: a socket and some chats opened now show up within a few polls.
    await connect(t, wsUrl(gw.port, `/api/mqtt/ws/hints/${await gw.sessionId('status')}?token=${gw.token}`))
    for (let i = 0; i < 5; i++) t.equal((await gw.chat('status', `live ${i}`)).status, 200, 'a chat while the page is open')
    await until(page, '#ws-hints', (text) => text === '1', 'the page to count the hints socket')
    await until(page, '#chat-rate', (text) => /^[0-9.]+/.test(text) && parseFloat(text) > 0, 'the page to show a chat rate above 0')
    t.pass('the page updates live: the socket and the chat rate show')
    t.ok(await page.locator('#outage').isHidden(), 'no outage banner while connected')
    t.equal(await page.locator('#db-status').textContent(), 'up')
    t.match(await page.locator('#workers-detail').textContent(), /none announced: chats go to the shared topic/, 'the workers card says the v1 worker is not announced')
    t.match(await page.locator('#transitions').textContent(), /connected/, 'the transitions list the connect')
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-connected.png'), fullPage: true })

    await broker.kill()
    await waitFor(async () => await page.locator('#outage').isVisible(), { timeoutMs: PAGE_UPDATE_MS, what: 'the outage banner to show' })
    t.pass('the outage banner shows once the broker is gone')
    t.not(await page.locator('#link-state').textContent(), 'connected', 'the link state no longer says connected')
    t.match(await page.locator('#outage-list').textContent(), /MQTT link/, 'the banner names the link')
    t.match(await page.title(), /^OUTAGE/, 'and so does the tab title')
    const rows = await page.locator('#transitions tr').evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)))
    t.ok(rows.some((cells) => cells[1] === 'connected' && cells[2] === 'reconnecting' && cells[3] !== ''), 'the drop is listed with its reason', { rows })
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-outage.png'), fullPage: true })

    t.same(problems, [], 'no console error, page error or failed request')
  })
}
