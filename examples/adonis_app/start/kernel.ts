import router from '@adonisjs/core/services/router'
import server from '@adonisjs/core/services/server'

server.errorHandler(() => import('#exceptions/handler'))

server.use([])

router.use([() => import('@adonisjs/core/bodyparser_middleware')])

export const middleware = router.named({
  // the seed's: Session.manager.authenticate, 401 'Invalid session' otherwise
  auth: () => import('#middleware/auth_middleware'),
  // the auth context: a transaction bound by castle.login (row-level security)
  context: () => import('#middleware/context_middleware'),
})
