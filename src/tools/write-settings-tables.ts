/**
 * `npm run docs:settings`: rewrites the settings tables of README.md and docs/worker.md from
 * the settings' docs. test/unit/settings/settings-tables.test.ts fails until this is run after
 * a setting or its doc changes.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { renderSettingsDocument, SETTINGS_DOCUMENTS } from './settings-tables.js'

for (const doc of SETTINGS_DOCUMENTS) {
  writeFileSync(doc.file, renderSettingsDocument(doc, readFileSync(doc.file, 'utf8')))
  process.stdout.write(`updated ${doc.file}\n`)
}
