/**
 * `npm run docs:statecharts`: rewrites the generated diagram blocks of docs/architecture.md
 * from the machines. The test in test/unit/architecture-doc.test.ts fails until this is run
 * after a machine changes.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { renderArchitectureDiagrams } from './architecture-diagrams.js'

const file = process.argv[2] ?? 'docs/architecture.md'
writeFileSync(file, renderArchitectureDiagrams(readFileSync(file, 'utf8')))
process.stdout.write(`updated ${file}\n`)
