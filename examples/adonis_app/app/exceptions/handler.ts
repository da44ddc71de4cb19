import app from '@adonisjs/core/services/app'
import { HttpContext, ExceptionHandler } from '@adonisjs/core/http'

export default class HttpExceptionHandler extends ExceptionHandler {
  protected debug = !app.inProduction

  /**
   * In production a 5xx says nothing of its cause (a database error's text
   * names tables, roles and statements); the log has it all.
   */
  async handle(error: unknown, ctx: HttpContext) {
    const status = Number((error as { status?: unknown })?.status ?? 500)
    if (app.inProduction && !(status < 500)) {
      return ctx.response.status(Number.isInteger(status) ? status : 500).send({ message: 'Internal server error' })
    }
    return super.handle(error, ctx)
  }
}
