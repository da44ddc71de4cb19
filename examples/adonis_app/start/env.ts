import { Env } from '@adonisjs/core/env'

export default await Env.create(new URL('../', import.meta.url), {
  NODE_ENV: Env.schema.enum(['development', 'production', 'test'] as const),
  PORT: Env.schema.number(),
  HOST: Env.schema.string({ format: 'host' }),
  APP_KEY: Env.schema.string(),
  LOG_LEVEL: Env.schema.string.optional(),
  DB_HOST: Env.schema.string({ format: 'host' }),
  DB_PORT: Env.schema.number(),
  DB_DATABASE: Env.schema.string(),
  // every route but the sign-in routes: castle.grant_request_role
  DB_USER: Env.schema.string(),
  DB_PASSWORD: Env.schema.string.optional(),
  // the sign-in routes: castle.grant_sign_in_role
  DB_SIGN_IN_USER: Env.schema.string(),
  DB_SIGN_IN_PASSWORD: Env.schema.string.optional(),
  DB_POOL_MAX: Env.schema.number.optional(),
})
