/**
 * Tests a message against the operator's content filters (CONTENT_FILTERS) and names the first
 * that matches. The patterns are JavaScript regular expressions, which backtrack: a pattern such
 * as `(a+)+$` takes exponential time on "aaaa…!". That is why this runs on a worker thread with
 * a deadline (CONTENT_FILTER_TIMEOUT_MS): a runaway match cannot be interrupted from inside,
 * so the pool terminates the thread and the chat is refused instead of the event loop hanging.
 */

export interface ScreenPattern {
  source: string
  flags: string
}

export interface ScreenContentInput {
  content: string
  /** Already validated at start-up (src/config.ts); in the order the operator listed them. */
  patterns: ScreenPattern[]
}

export interface ScreenContentOutput {
  blocked: boolean
  /** Index in `patterns` of the first pattern that matched; absent when none did. */
  pattern?: number
}

export default async function screenContent ({ content, patterns }: ScreenContentInput): Promise<ScreenContentOutput> {
  if (typeof content !== 'string') throw new TypeError('content must be a string')
  if (!Array.isArray(patterns)) throw new TypeError('patterns must be an array')
  for (let i = 0; i < patterns.length; i++) {
    const { source, flags } = patterns[i] as ScreenPattern
    // Compiled per task: a few microseconds each, and no RegExp (with its lastIndex) outlives the task.
    if (new RegExp(source, flags).test(content)) return { blocked: true, pattern: i }
  }
  return { blocked: false }
}
