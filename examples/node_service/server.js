// castle_sessions from Node.js: a tiny notes service on node-postgres (pg) and
// node's http module. A demo, not a framework; the routes and replies are the
// same as examples/python_service/app.py.
//
//   DATABASE_URL          postgresql:// URL, as the request role (notes_app, examples/schema.sql)
//   SIGN_IN_DATABASE_URL  the same, as the sign-in role (notes_sign_in)
//   PORT          port on 127.0.0.1, default 8000
'use strict';
const http = require('node:http');
const crypto = require('node:crypto');
const { promisify } = require('node:util');
const pg = require('pg');

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on('error', (err) => console.error('idle database connection failed:', err.message));
// Only the sign-in route connects as the role that may create sessions.
const signInPool = new pg.Pool({ connectionString: process.env.SIGN_IN_DATABASE_URL });
signInPool.on('error', (err) => console.error('idle database connection failed:', err.message));
const scrypt = promisify(crypto.scrypt);
const UNAUTHORIZED = '{"error": "unauthorized"}';

async function passwordOk(stored, password) {
  const [, salt, key] = stored.split('$'); // 'scrypt$<salt hex>$<key hex>', see examples/schema.sql
  const got = await scrypt(password, Buffer.from(salt, 'hex'), 32, { N: 16384, r: 8, p: 1 });
  return crypto.timingSafeEqual(got, Buffer.from(key, 'hex'));
}

function bearer(req) {
  const match = /^bearer (.+)$/i.exec(req.headers.authorization ?? '');
  return match ? match[1] : null;
}

function reply(res, status, body) {
  const data = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const headers = data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {};
  if (status === 401) headers['WWW-Authenticate'] = 'Bearer';
  res.writeHead(status, headers).end(data);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return null;
  }
}

async function signIn(req, res) {
  const body = await readJson(req);
  if (!(body && Number.isSafeInteger(body.user_id) && typeof body.password === 'string')) {
    return reply(res, 400, { error: 'expected {"user_id": integer, "password": string}' });
  }
  const { rows } = await signInPool.query('SELECT password_hash FROM app_users WHERE id = $1', [body.user_id]);
  if (rows.length === 0 || !(await passwordOk(rows[0].password_hash, body.password))) {
    return reply(res, 401, UNAUTHORIZED);
  }
  const data = JSON.stringify({ user_agent: req.headers['user-agent'] ?? null });
  const created = await signInPool.query("SELECT castle.create_session($1::bigint, '1 day', $2::jsonb) AS token",
    [body.user_id, data]);
  reply(res, 200, { token: created.rows[0].token });
}

async function notes(req, res) {
  const token = bearer(req);
  if (token === null) return reply(res, 401, UNAUTHORIZED);
  // One transaction on one pooled connection: castle.login binds the session to
  // it, the row-level security policy on notes reads castle.user_id(), and
  // COMMIT (or ROLLBACK) ends the binding before the connection goes back to
  // the pool. The token is always a bind parameter, never SQL text.
  const client = await pool.connect();
  let rows;
  try {
    await client.query('BEGIN');
    await client.query('SELECT castle.login($1)', [token]);
    ({ rows } = await client.query('SELECT id, body FROM notes ORDER BY id'));
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    if (err.code === '28000') return reply(res, 401, UNAUTHORIZED);
    throw err;
  } finally {
    client.release();
  }
  reply(res, 200, rows);
}

async function signOut(req, res) {
  const token = bearer(req);
  if (token === null) return reply(res, 401, UNAUTHORIZED);
  const { rows } = await pool.query('SELECT castle.revoke($1) AS revoked', [token]);
  if (rows[0].revoked) reply(res, 204);
  else reply(res, 401, UNAUTHORIZED);
}

const routes = { 'POST /sign-in': signIn, 'GET /notes': notes, 'POST /sign-out': signOut };

const server = http.createServer((req, res) => {
  const route = routes[`${req.method} ${req.url}`];
  if (!route) return reply(res, 404, { error: 'not found' });
  route(req, res).catch((err) => {
    console.error(`${req.method} ${req.url} failed:`, err.message);
    if (!res.headersSent) reply(res, 500, { error: 'internal error' });
  });
});
server.listen(Number(process.env.PORT ?? 8000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
