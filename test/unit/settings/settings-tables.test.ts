import { readFileSync } from 'node:fs'
import t from 'tap'
import { renderSettingsDocument, SETTINGS_DOCUMENTS } from '../../../src/tools/settings-tables.js'
import { settingsTable, withSettingsTable } from '../../../src/settings/settings-table.js'
import { REQUIRED, settingOf } from '../../../src/settings/kernel.js'
import { int } from '../../../src/settings/parsers.js'

for (const doc of SETTINGS_DOCUMENTS) {
  t.test(`the settings table in ${doc.file} is the one generated from the settings' docs (npm run docs:settings)`, async (t) => {
    const text = readFileSync(new URL(`../../../${doc.file}`, import.meta.url), 'utf8')
    t.equal(text, renderSettingsDocument(doc, text))
  })
}

t.test('a generated row shows the default, the doc and any former name', async (t) => {
  interface C { a: number, b: number | undefined, c: string, d: boolean }
  const s = settingOf<C>()
  const table = settingsTable<C>([
    s({ env: 'A_MS', key: 'a', fallback: 5, example: '5', parse: int(0, 9), doc: 'Waits | at most.', formerly: ['OLD_A_MS'] }),
    s({ env: 'B', key: 'b', fallback: undefined, example: '1', parse: int(0, 9), doc: 'Unset means none.' }),
    s({ env: 'C', key: 'c', fallback: REQUIRED, example: 'x', parse: (raw) => raw, doc: 'Needed.' }),
    s({ env: 'D', key: 'd', fallback: false, example: '1', parse: () => true, doc: 'A switch.', defaultDoc: 'on in production' })
  ])
  t.equal(table, [
    '| variable | default | meaning |',
    '|---|---|---|',
    '| `A_MS` | `5` | Waits \\| at most. Formerly `OLD_A_MS` (still read, logged as deprecated). |',
    '| `B` | (unset) | Unset means none. |',
    '| `C` | required | Needed. |',
    '| `D` | on in production | A switch. |'
  ].join('\n'))
})

t.test('a document without the markers is an error, not a silently missing table', async (t) => {
  t.throws(() => withSettingsTable('# no table here\n', 'gateway', '| x |'), /markers for the "gateway" settings table not found/)
})
