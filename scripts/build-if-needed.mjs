// `npm start` runs the compiled server; this builds it first when dist/ is missing or older
// than any source file, so a fresh clone needs only `npm ci && npm start`.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

const entry = 'dist/src/main.js'
const roots = ['src', 'machines', 'workers', 'tsconfig.json', 'package.json']

function newest (path) {
  if (!existsSync(path)) return 0
  const st = statSync(path)
  if (!st.isDirectory()) return st.mtimeMs
  return Math.max(0, ...readdirSync(path).map((name) => newest(join(path, name))))
}

const built = existsSync(entry) ? statSync(entry).mtimeMs : 0
if (built === 0 || Math.max(...roots.map(newest)) > built) {
  process.stderr.write('building (tsc)...\n')
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' })
}
