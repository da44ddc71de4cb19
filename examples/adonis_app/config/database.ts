import env from '#start/env'
import { defineConfig } from '@adonisjs/lucid'

/*
 * Two connections, two roles (docs/adonis.md): `request`, the default, as
 * a role castle.grant_request_role made, for every route; `sign_in`, as a
 * role castle.grant_sign_in_role made, for the routes that create or rotate
 * sessions. A SQL injection in a request route then cannot become anyone.
 */
function connection(user: string, password: string | undefined) {
  return {
    client: 'pg' as const,
    connection: {
      host: env.get('DB_HOST'),
      port: env.get('DB_PORT'),
      user,
      password,
      database: env.get('DB_DATABASE'),
    },
    pool: { min: 0, max: env.get('DB_POOL_MAX', 10), acquireTimeoutMillis: 5000 },
  }
}

export default defineConfig({
  connection: 'request',
  connections: {
    request: connection(env.get('DB_USER'), env.get('DB_PASSWORD')),
    sign_in: connection(env.get('DB_SIGN_IN_USER'), env.get('DB_SIGN_IN_PASSWORD')),
  },
})
