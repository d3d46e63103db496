/**
 * The Grafana dashboards under grafana/dashboards/: every query names only metrics and labels
 * the gateway's /metrics exports (the registry of src/metrics.ts with prom-client's defaults),
 * so no panel is silently empty after a rename; and the panels fit Grafana's 24-column grid.
 */
import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { exportedSeries, matcherLabels, metricNames } from '../fixtures/promql.js'

const DIR = new URL('../../grafana/dashboards/', import.meta.url)

interface Target { refId?: string, expr?: string, datasource?: { type?: string, uid?: string } }
interface Panel {
  id: number
  type: string
  title: string
  description?: string
  datasource?: { type?: string, uid?: string }
  gridPos: { h: number, w: number, x: number, y: number }
  targets?: Target[]
  panels?: Panel[]
}
interface Dashboard {
  uid: string
  title: string
  panels: Panel[]
  templating: { list: Array<{ name: string, type: string, query?: unknown, definition?: string }> }
  annotations: { list: Array<{ name: string, expr?: string }> }
}

const files = readdirSync(DIR).filter((f) => f.endsWith('.json'))
const exported = exportedSeries()

function allPanels (panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])])
}

/** Every PromQL expression of a dashboard, with where it comes from. */
function queries (d: Dashboard): Array<{ where: string, expr: string }> {
  const out: Array<{ where: string, expr: string }> = []
  for (const p of allPanels(d.panels)) {
    for (const target of p.targets ?? []) {
      if (target.expr !== undefined) out.push({ where: `panel "${p.title}" ${target.refId ?? ''}`, expr: target.expr })
    }
  }
  for (const a of d.annotations.list) if (a.expr !== undefined) out.push({ where: `annotation "${a.name}"`, expr: a.expr })
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query ?? ''
    // label_values(metric, label): the metric must exist and carry the label.
    const lv = /^label_values\(\s*([^,]+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$/.exec(q)
    if (lv !== null) out.push({ where: `variable $${v.name}`, expr: `${lv[1] as string}{${lv[2] as string}=~".+"}` })
    else out.push({ where: `variable $${v.name}`, expr: q })
  }
  return out
}

t.test('there is an overview dashboard, and every dashboard file parses with a unique uid', async (t) => {
  t.ok(files.includes('tether-overview.json'), 'grafana/dashboards/tether-overview.json exists')
  const uids = new Set<string>()
  for (const file of files) {
    const d = JSON.parse(readFileSync(new URL(file, DIR), 'utf8')) as Dashboard
    t.type(d.uid, 'string', `${file} has a uid`)
    t.notOk(uids.has(d.uid), `${file}'s uid ${d.uid} is unique`)
    uids.add(d.uid)
    t.type(d.title, 'string', `${file} has a title`)
  }
})

for (const file of files) {
  const d = JSON.parse(readFileSync(new URL(file, DIR), 'utf8')) as Dashboard

  t.test(`${file}: every query names only metrics /metrics exports, matched on labels they have`, async (t) => {
    const qs = queries(d)
    t.ok(qs.length > 0, 'it has queries')
    for (const { where, expr } of qs) {
      const names = metricNames(expr)
      t.ok(names.length > 0, `${where} reads a metric: ${expr}`)
      for (const name of names) {
        const series = exported.get(name)
        if (series === undefined) {
          t.fail(`${where} reads ${name}, which /metrics does not export${exported.has(`${name}_bucket`) ? ` (a histogram: use ${name}_bucket, _sum or _count)` : ''}`)
          continue
        }
        const unknown = matcherLabels(expr, name).filter((l) => !series.labels.has(l))
        t.same(unknown, [], `${where}: ${name} is matched only on labels it has`)
      }
      // Grouping by a label no metric of the query has yields one unnamed series.
      const known = new Set(names.flatMap((n) => [...(exported.get(n)?.labels ?? [])]))
      for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
        const labels = (m[1] as string).split(',').map((s) => s.trim()).filter((s) => s !== '')
        t.same(labels.filter((l) => !known.has(l)), [], `${where} groups only by labels its metrics have`)
      }
    }
  })

  t.test(`${file}: panels use the dashboard's data source and instance filter, and fit the grid`, async (t) => {
    const panels = allPanels(d.panels)
    const ids = panels.map((p) => p.id)
    t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
    t.ok(d.templating.list.some((v) => v.type === 'datasource' && v.name === 'datasource'), 'a datasource variable')
    t.ok(d.templating.list.some((v) => v.name === 'instance'), 'an instance variable')
    for (const p of panels) {
      t.ok(p.gridPos.x >= 0 && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `"${p.title}" fits the 24-column grid`)
      if (p.type === 'row') continue
      t.equal(p.datasource?.uid, '${datasource}', `"${p.title}" uses the datasource variable`)
      t.ok((p.targets ?? []).length > 0, `"${p.title}" has a query`)
      t.type(p.description, 'string', `"${p.title}" says what it shows`)
      for (const target of p.targets ?? []) {
        const expr = target.expr ?? ''
        for (const name of metricNames(expr)) {
          const selectors = [...expr.matchAll(new RegExp(`(?<![A-Za-z0-9_:])${name}(\\{[^}]*\\})?`, 'g'))]
          t.ok(selectors.every((s) => (s[1] ?? '').includes('instance=~"$instance"')), `"${p.title}": every ${name} selector follows the instance variable`)
        }
      }
    }
  })
}

t.test('the overview shows link state, reconnects, pending, outcomes, latency quantiles, pool, sockets, lag and memory', async (t) => {
  const d = JSON.parse(readFileSync(new URL('tether-overview.json', DIR), 'utf8')) as Dashboard
  const exprs = queries(d).map((q) => q.expr)
  const shows = (re: RegExp): boolean => exprs.some((e) => re.test(e))
  t.ok(shows(/tether_mqtt_link_state\{/), 'link state')
  t.ok(shows(/tether_mqtt_reconnects_total/), 'reconnects')
  t.ok(shows(/tether_chat_pending_requests/), 'pending requests')
  t.ok(shows(/rate\(tether_chat_requests_total/), 'chat rate by outcome')
  for (const q of ['0.5', '0.9', '0.99']) {
    t.ok(shows(new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, sum by \\([^)]*\\ble\\b[^)]*\\) \\(rate\\(tether_chat_request_duration_seconds_bucket`)), `chat latency p${Math.round(Number(q) * 100)} from the histogram`)
  }
  t.ok(shows(/tether_http_responses_total/), 'HTTP responses')
  t.ok(shows(/tether_db_pool_connections/) && shows(/tether_db_pool_waiting_requests/) && shows(/tether_db_up/), 'database pool and up')
  t.ok(shows(/tether_ws_connections/) && shows(/tether_ws_closed_total/), 'WebSockets')
  t.ok(shows(/tether_event_loop_lag_p99_seconds/), 'event-loop lag')
  t.ok(shows(/process_resident_memory_bytes/) && shows(/nodejs_heap_size_used_bytes/), 'memory')
  const shown = new Set(exprs.flatMap(metricNames).map((n) => n.replace(/_(bucket|sum|count)$/, '')))
  const families = [...new Set([...exported.keys()].filter((n) => n.startsWith('tether_')).map((n) => n.replace(/_(bucket|sum|count)$/, '')))]
  const hidden = families.filter((n) => !shown.has(n))
  t.comment(`tether_ metrics not on the overview: ${hidden.length === 0 ? 'none' : hidden.join(', ')}`)
})
