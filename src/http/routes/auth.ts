/**
 * POST /api/auth/register, POST /api/auth/login, GET /api/auth/me. Password hashing and
 * verification run in the thread pool; a login for an unknown user still verifies
 * against a fixed hash so the answer takes as long as for a wrong password.
 */
import type { Passwords } from '../../auth/password.js'
import type { LoginThrottle } from '../../auth/login-throttle.js'
import type { RateLimiter } from '../../auth/rate-limiter.js'
import type { Tokens } from '../../auth/tokens.js'
import type { Accounts } from '../../db/accounts.js'
import { TetherError } from '../../errors.js'
import type { Logger } from '../../log.js'
import { addressBucket } from '../client-address.js'
import { jsonRoute, required, type RouteDeps } from '../request-context.js'
import type { Handler } from '../server.js'
import { checkText } from '../validate.js'
import { ROUTES } from '../route-table.js'

export interface AuthRouteDeps extends RouteDeps {
  accounts: () => Accounts
  passwords: Passwords
  tokens: Tokens
  /** The login limits, shared by the cluster's gateways (src/auth/login-throttle.ts). */
  loginThrottle: LoginThrottle
  /** Registrations per client address (REGISTER_PER_ADDRESS_PER_HOUR). */
  registrations: RateLimiter
  log: Logger
  onLimited?: (limit: 'register_address') => void
}

const USERNAME = /^[A-Za-z0-9_.-]{3,32}$/

function username (value: unknown): string {
  const name = required(checkText('username', value, { max: 32 }))
  if (!USERNAME.test(name)) throw new TetherError('invalid_request', 'username must be 3 to 32 characters from A-Z, a-z, 0-9, _, . and -.')
  return name
}

function password (value: unknown): string {
  // 256 characters: long passphrases pass, multi-megabyte "passwords" do not reach scrypt.
  const pw = required(checkText('password', value, { max: 256 }))
  if (pw.length < 8) throw new TetherError('invalid_request', 'password must be at least 8 characters.')
  return pw
}

export function registerHandler (deps: AuthRouteDeps): Handler {
  return jsonRoute(deps, {
    route: ROUTES.register.path,
    auth: false,
    readsBody: true,
    async handle ({ body, ex, remoteAddress }) {
      const name = username(body.username)
      const pw = password(body.password)
      // Every well-formed attempt counts, taken or not: the cost is the hash, not the account.
      const key = `ip:${addressBucket(remoteAddress)}`
      const verdict = deps.registrations.check(key)
      if (!verdict.allowed) {
        deps.log.warn({ request_id: ex.requestId }, 'registration rate-limited')
        deps.onLimited?.('register_address')
        throw new TetherError('rate_limited', 'Too many registrations from this address; retry later.', verdict.retryAfterS)
      }
      deps.registrations.fail(key)
      let user: Awaited<ReturnType<Accounts['create']>>
      try {
        // Before the hash: with the database down this answers 503 without spending scrypt.
        const accounts = deps.accounts()
        const hash = await deps.passwords.hash(pw)
        user = await accounts.create(name, hash)
      } catch (err) {
        // Refused for the server's reasons (503): the attempt is given back.
        deps.registrations.refund(key)
        throw err
      }
      if (user === null) throw new TetherError('username_taken')
      deps.log.info({ request_id: ex.requestId, user_id: user.id }, 'user registered')
      return { status: 201, body: { id: user.id, username: user.username } }
    }
  })
}

export function loginHandler (deps: AuthRouteDeps): Handler {
  return jsonRoute(deps, {
    route: ROUTES.login.path,
    auth: false,
    readsBody: true,
    async handle ({ body, ex, remoteAddress }) {
      // Types first: a malformed body is 400 and costs no rate-limit token.
      const name = required(checkText('username', body.username, { max: 256 }))
      const pw = required(checkText('password', body.password, { max: 256 }))
      const userKey = `user:${name.toLowerCase()}`
      const ipKey = `ip:${addressBucket(remoteAddress)}`
      // Counted as a failure before the (slow) check, so that concurrent attempts cannot all pass
      // the limit while the first ones are still being verified; a successful login clears the
      // username's count and gives the address its token back. The count is the cluster's.
      const verdict = await deps.loginThrottle.take([userKey, ipKey])
      if (!verdict.allowed) {
        deps.log.warn({ request_id: ex.requestId, key: verdict.key.startsWith('ip:') ? 'address' : 'username' }, 'login rate-limited')
        throw new TetherError('rate_limited', undefined, verdict.retryAfterS)
      }
      let user: Awaited<ReturnType<Accounts['findByUsername']>>
      let ok: boolean
      try {
        user = await deps.accounts().findByUsername(name)
        ok = await deps.passwords.verify(pw, user?.password_hash ?? deps.passwords.decoy)
      } catch (err) {
        // Not a wrong password: the server could not check it (503 overloaded, db_unavailable).
        // A user turned away by a registration flood must not be locked out on top.
        deps.loginThrottle.refund([userKey, ipKey])
        throw err
      }
      if (user === undefined || !ok) {
        deps.log.info({ request_id: ex.requestId }, 'login failed')
        throw new TetherError('invalid_credentials')
      }
      deps.loginThrottle.reset(userKey)
      deps.loginThrottle.refund([ipKey])
      const upgrade = deps.passwords.outdated(user.password_hash) ? deps.passwords.upgrade(pw) : null
      if (upgrade !== null) {
        // In the background: the login is answered now; a failure, or another upgrade running
        // (null above), only postpones it to a later login.
        const previous = user.password_hash
        upgrade
          .then(async (next) => await deps.accounts().replaceHash(user.id, previous, next))
          .then(
            (replaced) => { if (replaced) deps.log.info({ user_id: user.id }, 'password hash upgraded to the current cost') },
            (err: unknown) => { deps.log.warn({ user_id: user.id, err: err instanceof Error ? err.message : String(err) }, 'upgrading a password hash failed; retried at a later login') }
          )
      }
      const { token, expiresAt } = deps.tokens.sign(user.id, user.username)
      return { status: 200, body: { token, expires_at: expiresAt.toISOString(), user: { id: user.id, username: user.username } } }
    }
  })
}

export function meHandler (deps: AuthRouteDeps): Handler {
  return jsonRoute(deps, {
    route: ROUTES.me.path,
    auth: true,
    readsBody: false,
    async handle ({ user }) {
      const claims = user as NonNullable<typeof user>
      const row = await deps.accounts().findById(claims.userId)
      if (row === undefined) throw new TetherError('unauthorized', 'The account no longer exists.')
      return { status: 200, body: { id: row.id, username: row.username } }
    }
  })
}
