/**
 * Where a task's worker file lives. `workers/<name>.worker.ts` is compiled to
 * `dist/workers/<name>.worker.js`, and this module to `dist/src/threads/task-file.js`, so
 * the same relative step works from both trees; only the extension tells them apart. Under
 * tap (and any TypeScript loader) this module itself runs as `.ts`, and worker threads
 * inherit the loader through process.execArgv, so they can load the `.ts` file directly.
 */
import { fileURLToPath } from 'node:url'

const extension = import.meta.url.endsWith('.ts') ? 'ts' : 'js'

/** Absolute path of `workers/<name>.worker.(ts|js)` next to the running sources. */
export function taskFile (name: string): string {
  return fileURLToPath(new URL(`../../workers/${name}.worker.${extension}`, import.meta.url))
}
