import { readFileSync } from 'node:fs'
import t from 'tap'
import { CLOSE_CODES } from '../../src/close-codes.js'

t.test('every close code is documented in docs/websocket.md with its number and retry advice', async (t) => {
  const doc = readFileSync(new URL('../../docs/websocket.md', import.meta.url), 'utf8')
  const rows = new Map([...doc.matchAll(/^\| (\d{4}) \| `([a-z_]+)` \| (yes|no) \|/gm)].map((m) => [m[2] as string, { code: Number(m[1]), reconnect: m[3] === 'yes' }]))
  for (const [name, entry] of Object.entries(CLOSE_CODES)) t.same(rows.get(name), { code: entry.code, reconnect: entry.reconnect }, name)
  t.equal(rows.size, Object.keys(CLOSE_CODES).length, 'nothing documented that the table lacks')
})

t.test('application close codes say by their range whether to reconnect', async (t) => {
  for (const [name, entry] of Object.entries(CLOSE_CODES)) {
    if (entry.code < 4000) continue
    t.equal(entry.reconnect, entry.code < 4500, `${name} (${entry.code})`)
  }
})
