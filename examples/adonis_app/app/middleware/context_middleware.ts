// The auth context: the rest of the request runs in a transaction bound to
// its session by castle.login, so row-level security sees castle.user_id().
// Queries see it on ctx.castle.client.
import Session from '#models/session'

export default Session.manager.contextMiddleware()
