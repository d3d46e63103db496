/** POST/GET /api/chatbot/sessions and GET /api/chatbot/sessions/:id/messages, owner-scoped. */
import type { RateLimiter } from '../../auth/rate-limiter.js'
import type { ChatStore } from '../../db/chat-store.js'
import type { SessionOwners } from '../../chat/session-owners.js'
import { TetherError } from '../../errors.js'
import { jsonRoute, required, type RouteDeps } from '../request-context.js'
import type { Handler } from '../server.js'
import { checkId, checkText } from '../validate.js'
import { ROUTES } from '../route-table.js'

export interface SessionRouteDeps extends RouteDeps {
  chats: () => ChatStore
  /** Told every session created or listed, so the user's hint sockets upgrade without a query. */
  owners?: SessionOwners
  /** Sessions created per user (SESSION_CREATE_PER_MINUTE); absent: no limit. */
  creations?: RateLimiter
  onLimited?: (limit: 'session_create') => void
}

/** Listings are bounded: a user with thousands of sessions gets the newest. */
const MAX_SESSIONS_LISTED = 200
const MAX_MESSAGES_LISTED = 1000

export function createSessionHandler (deps: SessionRouteDeps): Handler {
  return jsonRoute(deps, {
    route: ROUTES.createSession.path,
    auth: true,
    readsBody: true,
    emptyBodyOk: true,
    async handle ({ body, user }) {
      const title = body.title === undefined || body.title === null ? '' : required(checkText('title', body.title, { min: 0, max: 200 }))
      const userId = (user as NonNullable<typeof user>).userId
      if (deps.creations !== undefined) {
        // Sessions are cheap rows, but each one is a new set of per-session chat places.
        const verdict = deps.creations.check(userId)
        if (!verdict.allowed) {
          deps.onLimited?.('session_create')
          throw new TetherError('too_many_requests', 'Too many sessions created; retry later.', verdict.retryAfterS)
        }
        deps.creations.fail(userId)
      }
      const row = await deps.chats().createSession(userId, title)
      deps.owners?.remember(row.id, userId)
      return { status: 201, body: { id: row.id, title: row.title, created_at: row.created_at.toISOString() } }
    }
  })
}

export function listSessionsHandler (deps: SessionRouteDeps): Handler {
  return jsonRoute(deps, {
    route: ROUTES.listSessions.path,
    auth: true,
    readsBody: false,
    async handle ({ user }) {
      const userId = (user as NonNullable<typeof user>).userId
      const rows = await deps.chats().listSessions(userId, MAX_SESSIONS_LISTED)
      for (const r of rows) deps.owners?.remember(r.id, userId)
      return { status: 200, body: rows.map((r) => ({ id: r.id, title: r.title, created_at: r.created_at.toISOString() })) }
    }
  })
}

export function sessionMessagesHandler (deps: SessionRouteDeps): Handler {
  return jsonRoute(deps, {
    route: ROUTES.sessionMessages.path,
    auth: true,
    readsBody: false,
    params: 1,
    async handle ({ user, params }) {
      // Contract (Identifiers): an id that breaks the rule is 400, before any lookup.
      const sessionId = required(checkId('id', params[0]))
      const rows = await deps.chats().listMessages((user as NonNullable<typeof user>).userId, sessionId, MAX_MESSAGES_LISTED)
      if (rows === null) throw new TetherError('session_not_found')
      return { status: 200, body: rows.map((r) => ({ id: r.id, role: r.role, content: r.content, status: r.status, created_at: r.created_at.toISOString() })) }
    }
  })
}
