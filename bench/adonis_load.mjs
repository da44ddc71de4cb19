// The HTTP load of bench/adonis.sh: castle-sessions-adonis against the seed's
// way, in one AdonisJS app, interleaved. Node's own http client, keep-alive,
// CLIENTS concurrent loops per run; latencies of every request.
//
//   node bench/adonis_load.mjs BASE_URL ROUNDS SECONDS CLIENTS USERS
import http from 'node:http'

const [base, rounds, seconds, clients, users] = process.argv.slice(2)
const ROUNDS = Number(rounds), SECONDS = Number(seconds), CLIENTS = Number(clients), USERS = Number(users)
const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS })
const url = new URL(base)

function request(method, path, token) {
  return new Promise((resolve, reject) => {
    const headers = token ? { authorization: `Bearer ${token}` } : {}
    const req = http.request({ host: url.hostname, port: url.port, method, path, agent, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

const randomUser = () => 1 + Math.floor(Math.random() * USERS)

async function signIn(way, user) {
  const { status, body } = await request('POST', `/bench/${way}/sign-in/${user}`)
  if (status !== 200) throw new Error(`${way} sign-in: ${status} ${body}`)
  return JSON.parse(body).token
}

/** CLIENTS loops of `step` for SECONDS: requests per second and latencies (ms). */
async function run(step) {
  const latencies = []
  const end = performance.now() + SECONDS * 1000
  await Promise.all(Array.from({ length: CLIENTS }, async (_, client) => {
    while (performance.now() < end) {
      const start = performance.now()
      await step(client)
      latencies.push(performance.now() - start)
    }
  }))
  latencies.sort((a, b) => a - b)
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]
  return { rps: latencies.length / SECONDS, p50: at(0.5), p99: at(0.99) }
}

const workloads = {
  'sign-in': (way) => async () => { await signIn(way, randomUser()) },
  'authenticated request': (way, tokens) => async (client) => {
    const { status, body } = await request('GET', `/bench/${way}/me`, tokens[client])
    if (status !== 200) throw new Error(`${way} me: ${status} ${body}`)
  },
}

// each client's own session, a user that signs in nowhere else
const tokens = {}
for (const way of ['castle', 'seed']) {
  tokens[way] = []
  for (let c = 0; c < CLIENTS; c++) tokens[way].push(await signIn(way, USERS + 1 + c))
}

const results = {}
for (const name of Object.keys(workloads)) {
  for (let r = 0; r < ROUNDS; r++) {
    for (const way of r % 2 === 0 ? ['castle', 'seed'] : ['seed', 'castle']) {
      const result = await run(workloads[name](way, tokens[way]))
      ;((results[name] ??= {})[way] ??= []).push(result)
      console.error(`  round ${r + 1} ${name} ${way}: ${result.rps.toFixed(0)}/s p50 ${result.p50.toFixed(2)} ms p99 ${result.p99.toFixed(2)} ms`)
    }
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const summary = {}
for (const [name, ways] of Object.entries(results)) {
  summary[name] = {}
  for (const [way, runs] of Object.entries(ways)) {
    summary[name][way] = {
      rps: median(runs.map((x) => x.rps)),
      p50: median(runs.map((x) => x.p50)),
      p99: median(runs.map((x) => x.p99)),
    }
  }
}
console.log(JSON.stringify(summary))
agent.destroy()
