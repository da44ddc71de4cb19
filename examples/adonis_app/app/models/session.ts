// The seed document's Session model, unchanged but for the line that imports
// SessionManager. (The seed's snippet leaves out two type imports, BelongsTo
// and Secret; they are the last two lines of imports here.)
import { DateTime } from 'luxon'
import { BaseModel, belongsTo, column } from '@adonisjs/lucid/orm'
import User from './user.js'
import { SessionManager } from 'castle-sessions-adonis'
import type { BelongsTo } from '@adonisjs/lucid/types/relations'
import type { Secret } from '@adonisjs/core/helpers'

export default class Session extends BaseModel {
  static table = 'sessions'

  static manager = new SessionManager(Session)

  @column({ isPrimary: true })
  declare id: number

  @column()
  declare hash: string

  @column()
  declare userId: number

  @belongsTo(() => User)
  declare user: BelongsTo<typeof User>

  @column.dateTime({ autoCreate: true })
  declare createdAt: DateTime

  @column.dateTime({ autoCreate: true, autoUpdate: true })
  declare updatedAt: DateTime

  @column.dateTime()
  declare expiresAt: DateTime | null

  @column.dateTime()
  declare usedAt: DateTime | null

  declare value: Secret<string> | null
  declare secret: Secret<string> | null
}
