import { Exception } from '@adonisjs/core/exceptions'

/**
 * Every refused token: the seed's error. One status, one code, one message
 * (the manager's `invalidMessage`), whatever the cause, so a caller cannot
 * tell an unknown id from a wrong secret, an expired session or a reuse.
 */
export class E_UNAUTHORIZED extends Exception {
  static status = 401
  static code = 'E_UNAUTHORIZED'
}

/**
 * The constructor's options and the database's castle.* settings disagree.
 * The database enforces its own settings, so the package refuses to run
 * rather than ignore an option; the message names the statement to run.
 */
export class E_SETTINGS_MISMATCH extends Exception {
  static status = 500
  static code = 'E_CASTLE_SETTINGS_MISMATCH'
}

/** A method that acts for the signed-in user ran outside the context middleware. */
export class E_NO_CONTEXT extends Exception {
  static status = 500
  static code = 'E_CASTLE_NO_CONTEXT'
}

/** `save()` or `delete()` on a session: it is castle's row, not the model's. */
export class E_NOT_A_LUCID_ROW extends Exception {
  static status = 500
  static code = 'E_CASTLE_NOT_A_LUCID_ROW'
}
