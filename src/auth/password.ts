/**
 * Password hashing for the auth routes, run on the worker pool so a burst of logins costs
 * worker threads, not event-loop time. The scrypt work itself is in
 * workers/hash-password.worker.ts and workers/verify-password.worker.ts.
 */
import type { WorkerPool } from '../workers/worker-pool.js'

export interface Passwords {
  /** A self-describing scrypt hash (`scrypt$N$r$p$salt$key`) with a fresh random salt. */
  hash (password: string): Promise<string>
  /** False for a wrong password and for a hash that is not in our format. */
  verify (password: string, hash: string): Promise<boolean>
}

export interface PasswordsOptions {
  /**
   * Deadline per hash or check, queueing included. One scrypt at N=2^14 takes tens of ms;
   * 5 s means the pool is badly backed up, and the route answers 503 rather than hang.
   */
  timeoutMs?: number
}

export const DEFAULT_PASSWORD_TIMEOUT_MS = 5_000

/**
 * Errors from the pool pass through unchanged (WorkerPoolError `overloaded`, `task_timeout`,
 * `pool_stopped`) for the route to map to 503s.
 */
export function createPasswords (pool: Pick<WorkerPool, 'run'>, options: PasswordsOptions = {}): Passwords {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PASSWORD_TIMEOUT_MS
  return {
    hash: (password) => pool.run<string>('hash-password', { password }, { timeoutMs }),
    verify: (password, hash) => pool.run<boolean>('verify-password', { password, hash }, { timeoutMs })
  }
}
