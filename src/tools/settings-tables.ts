/**
 * Which generated settings table goes into which document: the gateway's into the README, the
 * LLM worker's into docs/worker.md. Shared by the writer and the test that catches drift.
 */
import { SETTINGS } from '../config.js'
import { WORKER_SETTINGS } from '../llm-worker/config.js'
import { settingsTable, withSettingsTable } from '../settings/settings-table.js'

export const SETTINGS_DOCUMENTS = [
  { file: 'README.md', name: 'gateway', table: () => settingsTable(SETTINGS) },
  { file: 'docs/worker.md', name: 'llm-worker', table: () => settingsTable(WORKER_SETTINGS) }
] as const

/** The document's text with its settings table regenerated. */
export function renderSettingsDocument (doc: typeof SETTINGS_DOCUMENTS[number], text: string): string {
  return withSettingsTable(text, doc.name, doc.table())
}
