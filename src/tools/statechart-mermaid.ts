/**
 * Renders an XState v5 machine as a mermaid stateDiagram, straight from the machine's own
 * state nodes, so the diagrams in docs/architecture.md cannot drift from the code
 * (test/unit/architecture-doc.test.ts regenerates and compares them).
 */
import type { AnyStateMachine } from 'xstate'

interface NodeLike {
  id: string
  key: string
  type: string
  parent?: NodeLike
  states: Record<string, NodeLike>
  initial?: { target: NodeLike[] }
  transitions: Map<string, { target?: NodeLike[], guard?: unknown, reenter?: boolean }[]>
}

function name (node: NodeLike, rootId: string): string {
  return node.id === rootId ? 'root' : node.id.slice(rootId.length + 1).replace(/\./g, '_')
}

function label (eventType: string, guard: unknown): string {
  // xstate.after.<delay>.<state id> -> after <delay>
  const after = /^xstate\.after\.([^.]+)\./.exec(eventType)
  const event = after !== null ? `after ${after[1] as string}` : eventType
  if (guard === undefined || guard === null) return event
  const g = typeof guard === 'string' ? guard : (guard as { type?: string }).type ?? 'guard'
  return `${event} [${g}]`
}

export function statechartMermaid (machine: AnyStateMachine): string {
  const root = machine.root as unknown as NodeLike
  const lines: string[] = ['stateDiagram-v2']
  const edges = new Set<string>()

  function visit (node: NodeLike, indent: string): void {
    const children = Object.values(node.states)
    const initial = node.initial?.target[0]
    if (initial !== undefined) lines.push(`${indent}[*] --> ${name(initial, root.id)}`)
    for (const child of children) {
      if (Object.keys(child.states).length > 0) {
        lines.push(`${indent}state ${name(child, root.id)} {`)
        visit(child, indent + '  ')
        lines.push(`${indent}}`)
      }
      if (child.type === 'final') lines.push(`${indent}${name(child, root.id)} --> [*]`)
    }
  }

  function collect (node: NodeLike): void {
    for (const [eventType, defs] of node.transitions) {
      for (const def of defs) {
        for (const target of def.target ?? []) {
          // Transitions declared on the root apply in every state: draw them from each top-level state.
          const sources = node.id === root.id ? Object.values(root.states).filter((s) => s !== target && s.type !== 'final') : [node]
          for (const source of sources) {
            const self = source === target
            const text = label(eventType, def.guard) + (self && def.reenter === true ? ' (re-enter)' : '')
            edges.add(`  ${name(source, root.id)} --> ${name(target, root.id)} : ${text}`)
          }
        }
      }
    }
    for (const child of Object.values(node.states)) collect(child)
  }

  visit(root, '  ')
  collect(root)
  lines.push(...[...edges])
  return lines.join('\n')
}
