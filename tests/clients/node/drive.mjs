// Runs a Node.js recipe of docs/recipes.md (its path is the first argument)
// and prints what tests/clients/test_recipes.py checks, as JSON. The second
// argument is a token with a wrong secret; CASTLE_DOWN_URL names a port
// nothing listens on.
import { pathToFileURL } from 'node:url'

const [recipePath, badToken] = process.argv.slice(2)
const recipeUrl = pathToFileURL(recipePath).href
const recipe = await import(recipeUrl)
const out = {}
const token = await recipe.signIn(1, { device: 'phone', n: 1 })
const session = await recipe.authenticate(token)
out.session = {
  idType: typeof session.id,
  id: String(session.id),
  userId: session.user_id,
  createdAtIsDate: session.created_at instanceof Date,
  lifetimeMs: session.expires_at - session.created_at,
  data: session.data,
}
out.tokenId = token
// several requests at once, on pgbouncer's two server connections
const many = await Promise.all(Array.from({ length: 24 }, (_, i) =>
  i % 2 ? recipe.myNotes(token) : recipe.authenticate(token).then((s) => String(s.id))))
out.concurrent = [...new Set(many.map((x) => JSON.stringify(x)))].sort()
out.notes = await recipe.myNotes(token)
try {
  await recipe.authenticate(badToken)
  out.refused = 'accepted'
} catch (error) {
  const e = error.cause ?? error
  out.refused = { status: recipe.httpStatus(error), code: e.code, type: error.constructor.name }
}
await recipe.close()
process.env.CASTLE_REQUEST_URL = process.env.CASTLE_DOWN_URL
const down = await import(recipeUrl + '?down')
try {
  await down.authenticate(token)
  out.down = 'answered'
} catch (error) {
  out.down = { status: down.httpStatus(error) }
}
await down.close()
console.log(JSON.stringify(out))
