import type { HttpContext } from '@adonisjs/core/http'
import type { NextFn } from '@adonisjs/core/types/http'
import type { LucidModel, LucidRow } from '@adonisjs/lucid/types/model'
import type {
  QueryClientContract,
  TransactionClientContract,
} from '@adonisjs/lucid/types/database'
import db from '@adonisjs/lucid/services/db'
import string from '@adonisjs/core/helpers/string'
import { Secret } from '@adonisjs/core/helpers'

import { bearerToken } from './bearer.js'
import { E_NO_CONTEXT, E_NOT_A_LUCID_ROW, E_SETTINGS_MISMATCH, E_UNAUTHORIZED } from './errors.js'

/** The seed's constructor options; each one must agree with the database. */
export interface SessionManagerOptions {
  /** castle.max_sessions */
  maxSessions?: number
  /** castle.token_prefix */
  tokenPrefix?: string
  /** castle.secret_size */
  secretSize?: number
  /** castle.invalid_message: the message of every E_UNAUTHORIZED */
  invalidMessage?: string
  /**
   * The Lucid connection (the sign-in role's) that `create`, `rotate` and
   * `revokeAll` use when no `client` is given. Default: the model's own.
   */
  signInConnection?: string
}

/** What the manager sets on the app's Session model instances. */
export interface SessionRow extends LucidRow {
  value: Secret<string> | null
}

/** The model the manager hydrates: the app's own Session model. */
export type SessionModel = LucidModel & { new (): SessionRow }

/** A user: anything with an id (a Lucid row in the seed). */
export type SessionUser = { id: number | bigint | string }

/** The auth context the context middleware opens (see `contextMiddleware`). */
export interface CastleContext<Session> {
  session: Session
  /** The request's transaction, bound to the session by castle.login. */
  client: TransactionClientContract
}

declare module '@adonisjs/core/http' {
  interface HttpContext {
    /** Set by the context middleware: the session (the app's model) and the bound transaction. */
    castle?: CastleContext<SessionRow & Record<string, any>>
  }
}

/** Castle's settings and the options that name them, in the seed's order. */
const SETTINGS = [
  ['maxSessions', 'castle.max_sessions'],
  ['tokenPrefix', 'castle.token_prefix'],
  ['secretSize', 'castle.secret_size'],
  ['invalidMessage', 'castle.invalid_message'],
] as const

/** The columns of castle.session, as the model's adapter result. */
const COLUMNS = 's.id, s.user_id, s.created_at, s.updated_at, s.expires_at, s.used_at, s.data'

/** The database's castle settings, named by the options. */
type Settings = Record<(typeof SETTINGS)[number][0], string>

/**
 * castle's refusal: SQLSTATE 28000 raised by a statement. PostgreSQL also
 * rejects a connection with 28000 (pg_hba.conf, a role that may not log in),
 * as a FATAL error: that is an outage, not a bad token, and must not become
 * a 401. (node-postgres gives only the localized severity, which is "FATAL"
 * in English and in most translations.)
 */
function isRefusal(error: unknown) {
  const e = error as { code?: unknown; severity?: unknown }
  return e?.code === '28000' && e?.severity !== 'FATAL' && e?.severity !== 'PANIC'
}

/**
 * castle's SessionManager for a Lucid model, over the castle_sessions
 * extension: every method is one SQL statement, and the database generates,
 * hashes, trims and checks tokens.
 */
export class SessionManager<Model extends SessionModel> {
  /** The database's settings, checked once per connection name: roles may have their own. */
  #checked = new Map<string, Promise<Settings>>()
  /** The message of each connection's refusals: the database's castle.invalid_message. */
  #invalidMessages = new Map<string, string>()

  constructor(
    private readonly sessionModel: Model,
    private readonly options: SessionManagerOptions = {}
  ) {}

  /**
   * Signs the user in: castle.create_session in one statement, trimming the
   * user to max_sessions in the same transaction. Inside `client`'s
   * transaction when given (the session exists only if it commits; the
   * manager never commits or rolls back a transaction it was handed).
   * Without `expiresIn` the session lasts castle.default_ttl (never, by
   * default). The row is read back by castle.verify in the same statement,
   * so the sign-in is the session's first use.
   */
  async create(
    user: SessionUser,
    options: { expiresIn?: string | number; client?: QueryClientContract; data?: unknown } = {}
  ): Promise<InstanceType<Model>> {
    const client = options.client ?? this.#connection(this.options.signInConnection)
    await this.#checkSettings(client)
    const [cast, id] = userIdParameter(user)
    const rows = await this.#run(client, null, `
      SELECT t.token, ${COLUMNS}
        FROM castle.create_session(?::${cast}, ?::interval, ?::jsonb) AS t(token),
             LATERAL castle.verify(t.token) AS s`,
      [id, ttlParameter(options.expiresIn), jsonParameter(options.data)])
    return this.#hydrate(rows[0], rows[0].token)
  }

  /**
   * The session of the request's bearer token, or E_UNAUTHORIZED (401, the
   * same for every cause). Any other failure (the database is down, say) is
   * not a refusal: it is thrown as it is, for a 5xx.
   */
  async authenticate(ctx: HttpContext): Promise<InstanceType<Model>> {
    const token = bearerToken(ctx.request.header('authorization'))
    const client = this.#connection()
    try {
      await this.#checkSettings(client)
      if (token === null) throw this.#refusal(client)
      const rows = await this.#run(client, token, `SELECT ${COLUMNS} FROM castle.authenticate(?) AS s`, [token])
      return this.#hydrate(rows[0])
    } catch (error) {
      if (!(error instanceof E_UNAUTHORIZED)) keepOutagesFromBecomingRefusals(ctx, error)
      throw error
    }
  }

  /** The request's session, or null: `authenticate` that never throws for a bad token. */
  async check(ctx: HttpContext): Promise<InstanceType<Model> | null> {
    const token = bearerToken(ctx.request.header('authorization'))
    return token === null ? null : this.verify(token)
  }

  /** The session a token names, or null for any bad token (castle.verify). */
  async verify(
    token: string | Secret<string>,
    options: { client?: QueryClientContract } = {}
  ): Promise<InstanceType<Model> | null> {
    const value = release(token)
    const client = options.client ?? this.#connection()
    await this.#checkSettings(client)
    const rows = await this.#run(client, value, `SELECT ${COLUMNS} FROM castle.verify(?) AS s`, [value])
    return rows[0]?.id === null || rows[0] === undefined ? null : this.#hydrate(rows[0])
  }

  /**
   * A new token for the same session (castle.rotate): the old one keeps
   * working for castle.rotate_grace, then is a reuse that revokes the
   * family. A bad token is E_UNAUTHORIZED. `expiresIn` can only shorten.
   */
  async rotate(
    token: string | Secret<string>,
    options: { expiresIn?: string | number; client?: QueryClientContract } = {}
  ): Promise<InstanceType<Model>> {
    const value = release(token)
    const client = options.client ?? this.#connection(this.options.signInConnection)
    await this.#checkSettings(client)
    const rows = await this.#run(client, value, `
      SELECT t.token, ${COLUMNS}
        FROM castle.rotate(?, ?::interval) AS t(token), LATERAL castle.verify(t.token) AS s`,
      [value, ttlParameter(options.expiresIn)])
    return this.#hydrate(rows[0], rows[0].token)
  }

  /** Sign out: deletes the token's session (and its rotations); false for a bad token. */
  async revoke(token: string | Secret<string>, options: { client?: QueryClientContract } = {}) {
    const value = release(token)
    const client = options.client ?? this.#connection()
    const rows = await this.#run(client, value, 'SELECT castle.revoke(?) AS revoked', [value])
    return rows[0].revoked as boolean
  }

  /**
   * Sign out everywhere: every session of the user, or all but `except`'s
   * family. Returns how many rows went. The sign-in role's call.
   */
  async revokeAll(
    user: SessionUser,
    options: { except?: { id: number | string } | number; client?: QueryClientContract } = {}
  ): Promise<number> {
    const client = options.client ?? this.#connection(this.options.signInConnection)
    const [cast, id] = userIdParameter(user)
    const except = typeof options.except === 'object' ? options.except.id : options.except
    const rows = await this.#run(client, null, `SELECT castle.revoke_all(?::${cast}, ?::bigint) AS revoked`,
      [id, except ?? null])
    return Number(rows[0].revoked)
  }

  /**
   * The auth context: a middleware class that runs the rest of the request
   * in a transaction bound to its session by castle.login, so that row-level
   * security policies see castle.user_id(). Queries see the binding only on
   * `ctx.castle.client` (pass it as Lucid's `client`). Sets `ctx.auth` as the
   * seed's middleware does. Commits when the handler returns, rolls back when
   * it throws; a refusal is E_UNAUTHORIZED.
   */
  contextMiddleware() {
    const manager = this
    return class CastleContextMiddleware {
      async handle(ctx: HttpContext, next: NextFn) {
        const token = bearerToken(ctx.request.header('authorization'))
        const connection = manager.#connection()
        await manager.#checkSettings(connection)
        if (token === null) throw manager.#refusal(connection)
        const client = await db.connection(connection.connectionName).transaction()
        try {
          const rows = await manager.#run(client, token, `SELECT ${COLUMNS} FROM castle.login(?) AS s`, [token])
          const session = manager.#hydrate(rows[0])
          ctx.castle = { session, client }
          ;(ctx as unknown as { auth: { session: unknown } }).auth = { session }
          await next()
        } catch (error) {
          if (!client.isCompleted) await client.rollback()
          throw error
        }
        // AdonisJS turns a handler's error into a response inside next(), so
        // the response's status is what says whether the handler failed
        if (client.isCompleted) return
        if (ctx.response.getStatus() >= 400) await client.rollback()
        else await client.commit()
      }
    }
  }

  /** The signed-in user's devices, most recently used first (under the context middleware). */
  async devices(ctx: HttpContext): Promise<InstanceType<Model>[]> {
    const rows = await this.#run(inContext(ctx).client, null, `SELECT ${COLUMNS} FROM castle.sessions_of() AS s`, [])
    return rows.map((row) => this.#hydrate(row))
  }

  /** Signs the user out of one of their devices by its id (under the context middleware). */
  async revokeDevice(ctx: HttpContext, sessionId: number | string): Promise<boolean> {
    const rows = await this.#run(inContext(ctx).client, null,
      'SELECT castle.revoke_own_session(?::bigint) AS revoked', [sessionId])
    return rows[0].revoked === true
  }

  /** Signs the user out everywhere but this session (under the context middleware). */
  async revokeOthers(ctx: HttpContext): Promise<number> {
    const rows = await this.#run(inContext(ctx).client, null,
      'SELECT castle.revoke_other_sessions() AS revoked', [])
    return Number(rows[0].revoked)
  }

  /**
   * A write-mode client: castle's checks write (a use, a reuse's
   * revocation), so they never go to a read replica.
   */
  #connection(name?: string): QueryClientContract {
    return db.connection(name ?? this.sessionModel.connection, { mode: 'write' })
  }

  /** One statement; a refusal becomes E_UNAUTHORIZED, and no token reaches a message or a query log. */
  async #run(client: QueryClientContract, token: string | null, sql: string, bindings: unknown[],
    refusals = true) {
    try {
      const result = await client.rawQuery(sql, bindings as any).debug(false)
      return result.rows as Record<string, any>[]
    } catch (error) {
      if (refusals && isRefusal(error)) throw this.#refusal(client)
      // knex puts the failed statement into the message (with its bindings,
      // in some of its configurations)
      if (token !== null) redact(error, token)
      throw error
    }
  }

  #refusal(client: QueryClientContract) {
    const message = this.#invalidMessages.get(client.connectionName)
    return new E_UNAUTHORIZED(message ?? this.options.invalidMessage ?? 'Not a valid session')
  }

  /**
   * The first call on each connection compares the options given to the
   * constructor with the database's settings, and throws when they differ:
   * the database enforces its own, and an option must not be ignored.
   */
  async #checkSettings(client: QueryClientContract): Promise<Settings> {
    const name = client.connectionName
    let checked = this.#checked.get(name)
    if (!checked) {
      checked = this.#compareSettings(client)
      this.#checked.set(name, checked)
      // an outage is not an answer: ask again next time
      checked.catch(() => this.#checked.delete(name))
    }
    return checked
  }

  async #compareSettings(client: QueryClientContract): Promise<Settings> {
    // castle.user_id() loads the library first, so its settings are defined
    const rows = await this.#run(client, null, `
      SELECT castle.user_id() AS loaded, current_database() AS database,
             ${SETTINGS.map(([option, name]) => `current_setting('${name}') AS "${option}"`).join(', ')}`, [],
      false)
    const database = rows[0]
    for (const [option, name] of SETTINGS) {
      const wanted = this.options[option]
      if (wanted === undefined || String(wanted) === database[option]) continue
      throw new E_SETTINGS_MISMATCH(
        `castle-sessions-adonis: the option ${option} is ${JSON.stringify(wanted)}, but ${name} is ` +
          `${JSON.stringify(database[option])} on connection "${client.connectionName}". The database ` +
          `enforces its own setting: as a superuser run ALTER DATABASE ${quoteIdent(database.database)} ` +
          `SET ${name} = ${quoteLiteral(String(wanted))}; (then reconnect), or drop the option.`
      )
    }
    this.#invalidMessages.set(client.connectionName, database.invalidMessage)
    return database as Settings
  }

  #hydrate(row: Record<string, any>, token?: string): InstanceType<Model> {
    const { token: _token, ...columns } = row
    columns.id = integerOrText(columns.id)
    columns.user_id = integerOrText(columns.user_id)
    const session = this.sessionModel.$createFromAdapterResult(columns) as InstanceType<Model>
    session.value = token === undefined ? null : new Secret(token)
    // castle's row, not the model's table's: writing it through Lucid would
    // quietly do nothing (or worse), and a delete would sign nobody out
    for (const method of ['save', 'delete'] as const) {
      Object.defineProperty(session, method, {
        value: async () => {
          throw new E_NOT_A_LUCID_ROW(
            `castle-sessions-adonis: a session is castle's row and cannot be ${method === 'save' ? 'saved' : 'deleted'} ` +
              'through the model; sign out with Session.manager.revoke(token), revokeDevice(ctx, id) or revokeAll(user)'
          )
        },
      })
    }
    return session
  }
}

/** castle.create_session's overload for the id: bigint for numbers, text otherwise. */
function userIdParameter(user: SessionUser): [string, string] {
  const id = user?.id
  if (typeof id === 'number' && Number.isSafeInteger(id)) return ['bigint', String(id)]
  if (typeof id === 'bigint') return ['bigint', id.toString()]
  if (typeof id === 'string' && id !== '') return ['text', id]
  throw new TypeError('castle-sessions-adonis: a user needs an id (an integer or a string)')
}

/**
 * The seed's models declare `id: number` and `userId: number`, but node-postgres
 * returns a bigint as a string and castle stores user ids as text: a canonical
 * integer that JavaScript holds exactly comes back a number, anything else as
 * it is (a uuid, a text id, an id past 2^53).
 */
function integerOrText(stored: string): number | string {
  const n = Number(stored)
  return Number.isSafeInteger(n) && String(n) === stored ? n : stored
}

/** The seed's `expiresIn`: a duration string ('1h', '30 days') or milliseconds. */
function ttlParameter(expiresIn: string | number | undefined): string | null {
  if (expiresIn === undefined) return null
  const ms = string.milliseconds.parse(expiresIn)
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new RangeError(`castle-sessions-adonis: expiresIn must be a positive duration, got ${JSON.stringify(expiresIn)}`)
  }
  return `${ms} milliseconds`
}

function jsonParameter(data: unknown): string | null {
  return data === undefined || data === null ? null : JSON.stringify(data)
}

function release(token: string | Secret<string>): string {
  return typeof token === 'string' ? token : token.release()
}

function inContext(ctx: HttpContext) {
  if (!ctx.castle) {
    throw new E_NO_CONTEXT('castle-sessions-adonis: this route needs the context middleware (manager.contextMiddleware())')
  }
  return ctx.castle
}

function redact(error: unknown, token: string) {
  if (error instanceof Error && token !== '') {
    error.message = error.message.split(token).join('[token]')
    if (error.stack) error.stack = error.stack.split(token).join('[token]')
  }
}

/**
 * The seed's AuthMiddleware answers every error with 401. An outage must not
 * look like a refusal (a client would discard a good token), so for this
 * request `response.unauthorized` throws the error instead: the app's
 * exception handler answers it with a 5xx.
 */
function keepOutagesFromBecomingRefusals(ctx: HttpContext, error: unknown) {
  const response = ctx.response as unknown as { unauthorized: (...args: unknown[]) => void }
  response.unauthorized = () => {
    throw error
  }
}

function quoteIdent(name: string) {
  return `"${name.replace(/"/g, '""')}"`
}

function quoteLiteral(value: string) {
  return `'${value.replace(/'/g, "''")}'`
}
