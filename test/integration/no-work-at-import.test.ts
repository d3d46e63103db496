import t from 'tap'
import { spawnTs, waitExit } from '../fixtures/run-ts.js'

t.test('importing every module opens no handle, starts no timer, hooks no signal and lets the process exit by itself', async (t) => {
  const child = spawnTs('test/fixtures/import-all.ts', {})
  // The process must end on its own: a timer, socket or worker started at import would keep it alive.
  // Compiling every module through the TypeScript loader takes a while on a loaded 2-core machine.
  const exit = await waitExit(child, 110_000)
  t.equal(exit.code, 0, exit.stderr)
  const report = JSON.parse(exit.stdout.trim().split('\n').pop() as string) as { imported: string[], extra: string[], hooks: string[] }
  t.ok(report.imported.length >= 20, `imported ${report.imported.length} modules`)
  t.ok(report.imported.includes('src/app.ts') && report.imported.includes('machines/mqtt-link.machine.ts'), 'including the composition root and the machines')
  t.same(report.extra, [], 'no handle or request left open by importing')
  t.same(report.hooks, [], 'no process signal or exit hook installed by importing')
})
