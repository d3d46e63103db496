import { readFileSync } from 'node:fs'
import t from 'tap'
import { createMetrics } from '../../src/metrics.js'

t.test('every exported tether_ series is documented in docs/metrics.md, and nothing more', async (t) => {
  const metrics = createMetrics()
  const exported = new Set(metrics.registry.getMetricsAsArray().map((m) => m.name).filter((n) => n.startsWith('tether_')))
  const doc = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8')
  const documented = new Set([...doc.matchAll(/^\| `(tether_[a-z0-9_]+)` \|/gm)].map((m) => m[1] as string))
  t.same([...exported].filter((n) => !documented.has(n)), [], 'exported but undocumented')
  t.same([...documented].filter((n) => !exported.has(n)), [], 'documented but not exported')
  t.ok(exported.size >= 10)
})

t.test('metric names follow the conventions: tether_ prefix, _total counters, base units', async (t) => {
  const metrics = createMetrics()
  for (const m of metrics.registry.getMetricsAsArray()) {
    if (!m.name.startsWith('tether_')) continue
    const type = (m as unknown as { type: string }).type
    if (type === 'counter') t.match(m.name, /_total$/, `${m.name} is a counter ending in _total`)
    else t.notMatch(m.name, /_total$/, `${m.name} is not a counter and does not end in _total`)
    t.notMatch(m.name, /_(ms|milliseconds|kb|mb)$/, `${m.name} uses base units`)
  }
})
