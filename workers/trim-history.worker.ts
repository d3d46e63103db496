/**
 * Keeps the newest turns of a chat history whose token count fits a budget, dropping from the
 * oldest: the history budget's one rule (src/chat/history-budget.ts) with tokens as the cost. A turn costs the tokens of its content; the few tokens a chat format adds per
 * turn are not counted, so leave them room in the budget.
 *
 * o200k_base is the encoding of GPT-4o, GPT-4.1, the o-series, GPT-5 and gpt-oss: the models
 * an OpenAI-compatible worker is most likely to serve today. cl100k_base (GPT-4, GPT-3.5)
 * loads in half the time and memory, but counts non-English text less closely for those
 * models. For other model families either is an estimate. Loading o200k_base costs each
 * thread about 1 s and 35 MB once, on its first task.
 */
import { keepNewestWithin } from '../src/chat/history-budget.js'

export interface TrimTurn {
  role: 'user' | 'assistant'
  content: string
}

export interface TrimHistoryInput {
  /** Oldest first. */
  history: TrimTurn[]
  /** Token budget; a whole number >= 0. */
  maxTokens: number
}

export interface TrimHistoryOutput {
  /** The kept turns, oldest first: a suffix of the input. */
  history: TrimTurn[]
  /** Tokens of the kept turns' contents. */
  tokens: number
}

/**
 * Text such as "<|endoftext|>" in a message is counted as the plain text it is: by default the
 * tokenizer throws on special tokens, and a user could otherwise fail every chat of a session.
 */
const AS_PLAIN_TEXT = { disallowedSpecial: new Set<string>() }

export default async function trimHistoryToTokens ({ history, maxTokens }: TrimHistoryInput): Promise<TrimHistoryOutput> {
  if (!Array.isArray(history)) throw new TypeError('history must be an array')
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 0) throw new TypeError(`maxTokens must be a whole number >= 0, got ${maxTokens}`)
  // Loaded on first use, not at import: the ranks are megabytes of source to parse.
  const { isWithinTokenLimit } = await import('gpt-tokenizer/encoding/o200k_base')
  const { kept, used } = keepNewestWithin(history, maxTokens, (turn, remaining, index) => {
    if (typeof turn?.content !== 'string') throw new TypeError(`history[${index}].content must be a string`)
    // Stops encoding as soon as the remaining budget is exceeded, so one huge old turn costs
    // no more than the budget.
    return isWithinTokenLimit(turn.content, remaining, AS_PLAIN_TEXT)
  })
  return { history: kept, tokens: used }
}
