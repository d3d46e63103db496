import { readFileSync } from 'node:fs'
import t from 'tap'
import { createMachine } from 'xstate'
import { renderArchitectureDiagrams } from '../../src/tools/architecture-diagrams.js'
import { statechartMermaid } from '../../src/tools/statechart-mermaid.js'

t.test('the statechart diagrams in docs/architecture.md are the ones the machines generate (run npm run docs:statecharts)', async (t) => {
  const doc = readFileSync(new URL('../../docs/architecture.md', import.meta.url), 'utf8')
  t.equal(renderArchitectureDiagrams(doc), doc)
})

t.test('the diagram shows every state and every transition of the link', async (t) => {
  const doc = readFileSync(new URL('../../docs/architecture.md', import.meta.url), 'utf8')
  for (const state of ['connecting', 'connected', 'stale', 'reconnecting', 'givingUp', 'closed']) {
    t.match(doc, new RegExp(`\\b${state} --> `), `${state} has outgoing transitions or is final`)
  }
  t.match(doc, /stale --> reconnecting : after probeTimeout/)
  t.match(doc, /connected_watching --> stale : after nextStaleCheck \[linkLooksStale\]/)
})

t.test('the renderer follows a machine change (a new state appears in the diagram)', async (t) => {
  const m = createMachine({ id: 'm', initial: 'a', states: { a: { on: { GO: 'b' } }, b: { type: 'final' } } })
  t.equal(statechartMermaid(m), ['stateDiagram-v2', '  [*] --> a', '  b --> [*]', '  a --> b : GO'].join('\n'))
})
