import router from '@adonisjs/core/services/router'
import db from '@adonisjs/lucid/services/db'
import hash from '@adonisjs/core/services/hash'
import { middleware } from '#start/kernel'
import Session from '#models/session'
import SeedSession from '#models/seed_session'
import User from '#models/user'
import Note from '#models/note'
import { bearerToken, SessionManager } from 'castle-sessions-adonis'

/** The sign-in role's connection: the only one that may create sessions. */
const signIn = () => db.connection('sign_in')

const device = (session: Session, current: number) => ({
  id: session.id,
  createdAt: session.createdAt,
  usedAt: session.usedAt,
  expiresAt: session.expiresAt,
  current: session.id === current,
})

router.post('/sign-in', async ({ request, response }) => {
  const { email, password } = request.only(['email', 'password'])
  const user = await User.findBy('email', String(email ?? ''), { client: signIn() })
  if (!user || !(await hash.verify(user.password, String(password ?? '')))) {
    return response.unauthorized('Invalid credentials')
  }
  const session = await Session.manager.create(user, { expiresIn: '30 days', client: signIn() })
  return { token: session.value!.release(), session: device(session, session.id) }
})

// a refresh: the new token; the old one works for castle.rotate_grace
router.post('/rotate', async ({ request }) => {
  const session = await Session.manager.rotate(bearerToken(request.header('authorization')) ?? '', { client: signIn() })
  return { token: session.value!.release(), session: device(session, session.id) }
})

// the seed's middleware
router
  .get('/me', async ({ auth }) => {
    const user = await User.query().select('id', 'name').where('id', auth.session.userId).firstOrFail()
    return { userId: auth.session.userId, name: user.name, session: device(auth.session, auth.session.id) }
  })
  .use(middleware.auth())

// the auth context: each request one transaction bound by castle.login
router
  .group(() => {
    router.get('/devices', async (ctx) => {
      const devices = await Session.manager.devices(ctx)
      return devices.map((d) => device(d, ctx.castle!.session.id))
    })
    router
      .delete('/devices/:id', async (ctx) => ({
        revoked: await Session.manager.revokeDevice(ctx, ctx.params.id),
      }))
      .where('id', router.matchers.number())
    router.post('/sign-out', async (ctx) => ({
      revoked: await Session.manager.revokeDevice(ctx, ctx.castle!.session.id),
    }))
    router.post('/sign-out-others', async (ctx) => ({ revoked: await Session.manager.revokeOthers(ctx) }))
    router.get('/notes', async (ctx) => Note.query({ client: ctx.castle!.client }).orderBy('id'))
    router.post('/notes', async (ctx) =>
      Note.create({ userId: ctx.castle!.session.userId, body: String(ctx.request.input('body')) },
        { client: ctx.castle!.client }))
  })
  .use(middleware.context())

// bench/adonis.sh: castle against the seed's way, with no password hashing
// in the measured path. Off unless CASTLE_BENCH_ROUTES=1.
if (process.env.CASTLE_BENCH_ROUTES === '1') {
  router.post('/bench/castle/sign-in/:id', async ({ params }) => {
    const session = await Session.manager.create({ id: Number(params.id) }, { client: signIn() })
    return { token: session.value!.release() }
  })
  // both checks in the same shape: the manager's authenticate, 401 otherwise
  router.get('/bench/castle/me', async (ctx) => {
    try {
      const session = await Session.manager.authenticate(ctx)
      return { sessionId: session.id }
    } catch {
      return ctx.response.unauthorized('Invalid session')
    }
  })
  router.post('/bench/seed/sign-in/:id', async ({ params }) => {
    const session = await SeedSession.manager.create({ id: Number(params.id) }, { client: signIn() })
    return { token: session.value!.release() }
  })
  router.get('/bench/seed/me', async (ctx) => {
    try {
      const session = await SeedSession.manager.authenticate(ctx)
      return { sessionId: session.id }
    } catch {
      return ctx.response.unauthorized('Invalid session')
    }
  })
}
// tests/clients/test_adonis.py: what only a test needs to reach. Off unless
// CASTLE_TEST_ROUTES=1.
if (process.env.CASTLE_TEST_ROUTES === '1') {
  // a sign-in inside the caller's transaction, which the manager must leave open
  router.post('/test/sign-in-in-transaction/:id', async ({ params, request }) => {
    const trx = await signIn().transaction()
    const session = await Session.manager.create({ id: Number(params.id) }, { client: trx })
    const leftOpen = !trx.isCompleted
    if (request.input('outcome') === 'commit') await trx.commit()
    else await trx.rollback()
    return { token: session.value!.release(), leftOpen }
  })
  // Deliberately injectable (the tests attack it): what can a SQL injection
  // in a request route reach? Only this user's rows, as the request role.
  router
    .get('/test/search', async (ctx) => {
      const q = String(ctx.request.input('q', ''))
      const found = await ctx.castle!.client.rawQuery(`SELECT id, user_id, body FROM notes WHERE body LIKE '%${q}%' ORDER BY id`)
      return found.rows
    })
    .use(middleware.context())
  // a handler that writes, then fails: the context's transaction must not commit
  router
    .post('/test/note-then-fail', async (ctx) => {
      await Note.create({ userId: ctx.castle!.session.userId, body: String(ctx.request.input('body')) },
        { client: ctx.castle!.client })
      throw new Error('the handler failed after writing')
    })
    .use(middleware.context())
  // create's options as given (a duration string, milliseconds, or none)
  router.post('/test/sign-in/:id', async ({ params, request }) => {
    const expiresIn = request.input('expiresIn')
    const session = await Session.manager.create({ id: Number(params.id) },
      { client: signIn(), ...(expiresIn === undefined ? {} : { expiresIn }), data: request.input('data') })
    return { token: session.value!.release(), session: session.serialize(), userIdType: typeof session.userId }
  })
  router.get('/test/check', async (ctx) => ({ sessionId: (await Session.manager.check(ctx))?.id ?? null }))
  router.post('/test/verify', async ({ request }) => ({
    sessionId: (await Session.manager.verify(String(request.input('token'))))?.id ?? null,
  }))
  router.post('/test/revoke', async ({ request }) => ({
    revoked: await Session.manager.revoke(String(request.input('token'))),
  }))
  // sign out everywhere (a password change): all the user's sessions but this one's family
  router.post('/test/revoke-all', async (ctx) => {
    const session = await Session.manager.authenticate(ctx)
    return { revoked: await Session.manager.revokeAll({ id: session.userId }, { except: session, client: signIn() }) }
  })
  router
    .post('/test/delete-session', async ({ auth }) => {
      await auth.session.delete()
      return { deleted: true }
    })
    .use(middleware.auth())
  // a manager whose options are those of the query string
  router.get('/test/manager-with-options', async (ctx) => {
    const options = Object.fromEntries(Object.entries(ctx.request.qs()).map(
      ([k, v]) => [k, ['maxSessions', 'secretSize'].includes(k) ? Number(v) : String(v)]))
    try {
      const session = await new SessionManager(Session, options).authenticate(ctx)
      return { sessionId: session.id }
    } catch (error: any) {
      return ctx.response.status(error.status ?? 500).send({ code: error.code, message: error.message })
    }
  })
}
