/**
 * The child side of the bench's IPC (load-client, loop-client, ws-client, heap-gateway): each is
 * forked by an orchestrator, answers it with messages and must never outlive its budget.
 */

/** Sends `msg` to the parent; resolves once it is handed over. */
export async function sendToParent (msg: unknown): Promise<void> {
  await new Promise<void>((resolve) => { process.send?.(msg, () => { resolve() }) })
}

/** Exits with code 3 after `ms`, whatever this process is doing then. */
export function exitAfter (name: string, ms: number): void {
  setTimeout(() => { console.error(`${name}: lifetime exceeded, exiting`); process.exit(3) }, ms).unref()
}

/** An IPC message `{type}` of this type. */
export function isType (m: unknown, type: string): boolean {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type
}
