import type Session from '#models/session'

declare module '@adonisjs/core/http' {
  interface HttpContext {
    auth: { session: Session }
  }
}
