/**
 * The alert rules Prometheus loads (deploy/prometheus/alerts.yml): valid to promtool, each
 * one unit-tested by promtool on series that must and must not fire it, reading only metrics
 * the gateway exports, and each with a runbook section in docs/operations.md.
 */
import { readFileSync } from 'node:fs'
import t from 'tap'
import { parse } from 'yaml'
import { PROMTOOL_MISSING, described, promtool, promtoolPath, promtoolVersion } from '../fixtures/promtool.js'
import { exportedSeries, matcherLabels, metricNames } from '../fixtures/promql.js'

const RULES = 'deploy/prometheus/alerts.yml'
const RULE_TESTS = 'deploy/prometheus/alerts.test.yml'

interface AlertRule {
  alert: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}

function read (path: string): string {
  return readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8')
}

const rules: AlertRule[] = (parse(read(RULES)) as { groups: Array<{ rules: AlertRule[] }> }).groups.flatMap((g) => g.rules)

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
function anchor (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-')
}

t.test('promtool accepts the rules and their unit tests pass', async (t) => {
  if (promtoolPath() === undefined) {
    t.fail(PROMTOOL_MISSING)
    return
  }
  t.comment(await promtoolVersion())
  const check = await promtool(['check', 'rules', RULES])
  t.equal(check.code, 0, described(`promtool check rules ${RULES}`, check))
  t.match(check.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`), 'every rule was read')
  const unit = await promtool(['test', 'rules', RULE_TESTS])
  t.equal(unit.code, 0, described(`promtool test rules ${RULE_TESTS}`, unit))
})

t.test('every alert has a unit test case that expects it to fire and one that expects silence', async (t) => {
  const tests = parse(read(RULE_TESTS)) as { rule_files: string[], tests: Array<{ alert_rule_test?: Array<{ alertname: string, exp_alerts?: unknown[] }> }> }
  t.same(tests.rule_files, ['alerts.yml'], 'the unit tests load alerts.yml')
  const cases = tests.tests.flatMap((x) => x.alert_rule_test ?? [])
  for (const rule of rules) {
    const mine = cases.filter((c) => c.alertname === rule.alert)
    t.ok(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${rule.alert} is expected to fire somewhere`)
    t.ok(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${rule.alert} is expected to stay quiet somewhere`)
  }
  const names = new Set(rules.map((r) => r.alert))
  t.same(cases.map((c) => c.alertname).filter((n) => !names.has(n)), [], 'no test case names an alert that does not exist')
})

t.test('every alert reads only metrics and labels /metrics exports', async (t) => {
  const exported = exportedSeries()
  for (const rule of rules) {
    const names = metricNames(rule.expr)
    t.ok(names.length > 0, `${rule.alert} reads some metric`)
    for (const name of names) {
      const series = exported.get(name)
      if (series === undefined) {
        t.fail(`${rule.alert} reads ${name}, which /metrics does not export`)
        continue
      }
      const unknown = matcherLabels(rule.expr, name).filter((l) => !series.labels.has(l))
      t.same(unknown, [], `${rule.alert}: ${name} is matched only on labels it has`)
    }
  }
})

t.test('every alert has a severity, a summary naming the instance, and a runbook section', async (t) => {
  const operations = read('docs/operations.md')
  const anchors = new Set([...operations.matchAll(/^#{2,4} (.+)$/gm)].map((m) => anchor(m[1] as string)))
  const seen = new Set<string>()
  for (const rule of rules) {
    t.notOk(seen.has(rule.alert), `${rule.alert} is defined once`)
    seen.add(rule.alert)
    t.match(rule.alert, /^Tether[A-Z][A-Za-z0-9]+$/, `${rule.alert} is TetherCamelCase`)
    t.ok(['critical', 'warning', 'info'].includes(rule.labels?.severity ?? ''), `${rule.alert} has a known severity`)
    t.match(rule.annotations?.summary ?? '', /\{\{ \$labels\.instance \}\}/, `${rule.alert}'s summary names the instance`)
    t.type(rule.annotations?.description, 'string', `${rule.alert} has a description`)
    const runbook = rule.annotations?.runbook ?? ''
    const match = /^docs\/operations\.md#(.+)$/.exec(runbook)
    t.ok(match !== null, `${rule.alert}'s runbook points into docs/operations.md (${runbook})`)
    if (match !== null) t.ok(anchors.has(match[1] as string), `docs/operations.md has the section #${match[1] as string} for ${rule.alert}`)
  }
})
