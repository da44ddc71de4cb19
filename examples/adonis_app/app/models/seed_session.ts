// The seed's Session model over a table of its own, managed the seed's way
// (app/seed_way): the benchmark's baseline. Not part of the example.
import { DateTime } from 'luxon'
import { BaseModel, column } from '@adonisjs/lucid/orm'
import type { Secret } from '@adonisjs/core/helpers'
import { SeedWaySessionManager } from '#seed_way/session_manager'

export default class SeedSession extends BaseModel {
  static table = 'seed_sessions'

  static manager = new SeedWaySessionManager(SeedSession)

  @column({ isPrimary: true })
  declare id: number

  @column()
  declare hash: string

  @column()
  declare userId: number

  @column.dateTime({ autoCreate: true })
  declare createdAt: DateTime

  @column.dateTime({ autoCreate: true, autoUpdate: true })
  declare updatedAt: DateTime

  @column.dateTime()
  declare expiresAt: DateTime | null

  @column.dateTime()
  declare usedAt: DateTime | null

  declare value: Secret<string> | null
}
