/*
 * The seed's way, for the benchmark only (bench/adonis.sh): a session manager
 * that does what the original castle package does, in the application,
 * written from the seed document's description: the token format of
 * castle_sessions, trimming by a read, a delete and an insert through Lucid,
 * and the hash compared in JavaScript. Like the original it keeps one session
 * too many and races under concurrent sign-ins. Never use it.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { DateTime } from 'luxon'
import string from '@adonisjs/core/helpers/string'
import { Secret } from '@adonisjs/core/helpers'
import type { HttpContext } from '@adonisjs/core/http'
import type { LucidModel, LucidRow } from '@adonisjs/lucid/types/model'
import type { QueryClientContract } from '@adonisjs/lucid/types/database'

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

type Row = LucidRow & {
  id: number
  hash: string
  userId: number
  expiresAt: DateTime | null
  value: Secret<string> | null
}

export class SeedWaySessionManager<Model extends LucidModel & { new (): Row }> {
  constructor(
    private readonly model: Model,
    private readonly options = { maxSessions: 3, tokenPrefix: 'oat_', secretSize: 64 }
  ) {}

  async create(user: { id: number }, options: { expiresIn?: string | number; client?: QueryClientContract } = {}) {
    const query = { client: options.client }
    const sessions = await this.model.query(query).where('user_id', user.id).orderBy('created_at', 'desc')
    const extra = sessions.slice(this.options.maxSessions).map((s) => s.id)
    if (extra.length > 0) await this.model.query(query).whereIn('id', extra).delete()
    const secret = newSecret(this.options.secretSize)
    const session = await this.model.create({
      userId: user.id,
      hash: sha256(secret),
      expiresAt: options.expiresIn === undefined ? null
        : DateTime.now().plus({ milliseconds: string.milliseconds.parse(options.expiresIn) }),
    } as any, options.client?.isTransaction ? { client: options.client } : { connection: options.client?.connectionName })
    session.value = new Secret(this.options.tokenPrefix + b64url(String(session.id)) + '.' + b64url(secret))
    return session
  }

  async authenticate(ctx: HttpContext) {
    const [type, token] = (ctx.request.header('authorization') ?? '').split(' ')
    if (type !== 'Bearer' || !token?.startsWith(this.options.tokenPrefix)) throw new Error('invalid')
    const [idPart, secretPart] = token.slice(this.options.tokenPrefix.length).split('.')
    const id = Number(Buffer.from(idPart ?? '', 'base64url').toString())
    const secret = Buffer.from(secretPart ?? '', 'base64url').toString()
    if (!Number.isSafeInteger(id)) throw new Error('invalid')
    const session = await this.model.find(id)
    if (!session) throw new Error('invalid')
    const expected = Buffer.from(session.hash, 'hex')
    const actual = createHash('sha256').update(secret).digest()
    if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) throw new Error('invalid')
    if (session.expiresAt && session.expiresAt <= DateTime.now()) throw new Error('invalid')
    return session
  }
}

function newSecret(size: number) {
  const random = [...randomBytes(size)].map((b) => ALPHABET[b & 63]).join('')
  return random + String(crc32(Buffer.from(random)))
}

function sha256(value: string) {
  return createHash('sha256').update(value).digest('hex')
}

function b64url(value: string) {
  return Buffer.from(value).toString('base64url')
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

function crc32(bytes: Buffer) {
  let crc = 0xffffffff
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}
