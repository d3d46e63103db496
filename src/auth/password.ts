/**
 * Password hashing for the auth routes, run on the thread pool so a burst of logins costs
 * worker threads, not event-loop time. The scrypt work itself is in
 * workers/hash-password.worker.ts and workers/verify-password.worker.ts.
 */
import { randomBytes } from 'node:crypto'
import { DEFAULT_COST } from '../../workers/hash-password.worker.js'
import { ThreadPoolError, type ThreadPool } from '../threads/thread-pool.js'

export interface Passwords {
  /** A self-describing scrypt hash (`scrypt$N$r$p$salt$key`) with a fresh random salt. */
  hash (password: string): Promise<string>
  /** False for a wrong password and for a hash that is not in our format. */
  verify (password: string, hash: string): Promise<boolean>
  /**
   * A well-formed hash at the cost of new hashes that no password matches (its key is random):
   * a login for an unknown username verifies against it, so it takes as long as a wrong
   * password and the response time does not tell which usernames exist.
   */
  readonly decoy: string
  /**
   * Whether a stored hash is cheaper than new ones (made before PASSWORD_HASH_COST was raised):
   * such a hash is replaced at the next successful login, since its shorter verification
   * would otherwise tell that the username exists (the decoy takes the full cost).
   */
  outdated: (hash: string) => boolean
  /**
   * A new hash at the current cost for an outdated one, or null when another upgrade is being
   * hashed: upgrades are a background nicety and take one thread task at a time, outside the
   * registrations' share, so neither a morning wave of logins nor a registration flood is
   * slowed by the other.
   */
  upgrade: (password: string) => Promise<string> | null
}

export interface PasswordsOptions {
  /**
   * Deadline per hash or check, queueing included. One scrypt at N=2^17 takes about 0.3 s;
   * 5 s means the pool is badly backed up, and the route answers 503 rather than hang.
   */
  timeoutMs?: number
  /** log2(N) of new hashes (PASSWORD_HASH_COST); the worker's default when absent. */
  cost?: number
  /**
   * Hashes (registrations) allowed in the pool at once, queue included. Logins verify
   * through the same pool; a flood of registrations must leave them room, so hashing gets
   * only this share of it and is refused with 503 overloaded past it. Unlimited when absent.
   */
  maxHashing?: number
  /** A hash was refused for want of its share, for the metrics. */
  onHashRefused?: () => void
}

export const DEFAULT_PASSWORD_TIMEOUT_MS = 5_000

/**
 * Errors from the pool pass through unchanged (ThreadPoolError `overloaded`, `task_timeout`,
 * `pool_stopped`) for the route to map to 503s.
 */
export function createPasswords (pool: Pick<ThreadPool, 'run'>, options: PasswordsOptions = {}): Passwords {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PASSWORD_TIMEOUT_MS
  const n = 2 ** (options.cost ?? DEFAULT_COST)
  const maxHashing = options.maxHashing ?? Number.POSITIVE_INFINITY
  let hashing = 0
  let upgrading = false
  return {
    decoy: `scrypt$${n}$8$1$${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}`,
    upgrade (password) {
      if (upgrading) return null
      upgrading = true
      return pool.run<string>('hash-password', { password, ...(options.cost !== undefined ? { cost: options.cost } : {}) }, { timeoutMs })
        .finally(() => { upgrading = false })
    },
    outdated (hash) {
      const stored = /^scrypt\$(\d+)\$/.exec(hash)
      return stored !== null && Number(stored[1]) < n
    },
    async hash (password) {
      if (hashing >= maxHashing) {
        options.onHashRefused?.()
        throw new ThreadPoolError('overloaded', 'Too many registrations at once; retry later.', 1)
      }
      hashing++
      try {
        return await pool.run<string>('hash-password', { password, ...(options.cost !== undefined ? { cost: options.cost } : {}) }, { timeoutMs })
      } finally {
        hashing--
      }
    },
    verify: (password, hash) => pool.run<boolean>('verify-password', { password, hash }, { timeoutMs })
  }
}
