/*
 * Prints the hash config/hash.ts's driver makes of the password given as
 * the first argument: how the tests and the tour create users.
 */
import { Scrypt } from '@adonisjs/core/hash/drivers/scrypt'

const scrypt = new Scrypt({ cost: 16384, blockSize: 8, parallelization: 1, maxMemory: 33554432 })
console.log(await scrypt.make(process.argv[2] ?? ''))
