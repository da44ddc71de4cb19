import { BaseModel, column } from '@adonisjs/lucid/orm'

/** A user's notes: row-level security shows each user only their own (castle.user_id()). */
export default class Note extends BaseModel {
  @column({ isPrimary: true })
  declare id: number

  @column()
  declare userId: number

  @column()
  declare body: string
}
