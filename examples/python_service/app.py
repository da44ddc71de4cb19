"""castle_sessions from Python: a tiny notes service on psycopg 3 and the
standard library's HTTP server. A demo, not a framework.

    DATABASE_URL          libpq conninfo or URL, as the request role (notes_app, examples/schema.sql)
    SIGN_IN_DATABASE_URL  the same, as the sign-in role (notes_sign_in)
    PORT          port on 127.0.0.1, default 8000

    POST /sign-in   {"user_id": 1, "password": "..."}  -> 200 {"token": "..."}
    GET  /notes     Authorization: Bearer <token>      -> 200 [{"id": ..., "body": ...}]
    POST /sign-out  Authorization: Bearer <token>      -> 204
Any refusal is 401 with the same body.
"""
import hashlib
import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from psycopg.errors import InvalidAuthorizationSpecification  # SQLSTATE 28000
from psycopg.types.json import Jsonb

DATABASE_URL = os.environ["DATABASE_URL"]
SIGN_IN_DATABASE_URL = os.environ["SIGN_IN_DATABASE_URL"]
UNAUTHORIZED = b'{"error": "unauthorized"}'


def connect(url=DATABASE_URL):
    # A connection per request keeps the demo short; a real service would use
    # psycopg_pool, with exactly the same transaction.
    return psycopg.connect(url, autocommit=True)


def password_ok(stored, password):
    _, salt, key = stored.split("$")  # 'scrypt$<salt hex>$<key hex>', see examples/schema.sql
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=16384, r=8, p=1, dklen=32)
    return hmac.compare_digest(got.hex(), key)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body=None):
        data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if data:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def bearer(self):
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def do_POST(self):
        if self.path == "/sign-in":
            self.sign_in()
        elif self.path == "/sign-out":
            self.sign_out()
        else:
            self.reply(404, {"error": "not found"})

    def do_GET(self):
        if self.path == "/notes":
            self.notes()
        else:
            self.reply(404, {"error": "not found"})

    def sign_in(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            body = None
        if not (isinstance(body, dict) and type(body.get("user_id")) is int and isinstance(body.get("password"), str)):
            return self.reply(400, {"error": "expected {\"user_id\": integer, \"password\": string}"})
        user_id, password = body["user_id"], body["password"]
        with connect(SIGN_IN_DATABASE_URL) as conn:
            row = conn.execute("SELECT password_hash FROM app_users WHERE id = %s", (user_id,)).fetchone()
            if row is None or not password_ok(row[0], password):
                return self.reply(401, UNAUTHORIZED)
            data = Jsonb({"user_agent": self.headers.get("User-Agent")})
            token = conn.execute("SELECT castle.create_session(%s::bigint, '1 day', %s)",
                                 (user_id, data)).fetchone()[0]
        self.reply(200, {"token": token})

    def notes(self):
        token = self.bearer()
        if token is None:
            return self.reply(401, UNAUTHORIZED)
        try:
            # One transaction: castle.login binds the session to it, the row-level
            # security policy on notes reads castle.user_id(), and COMMIT ends the
            # binding. The token is always a bind parameter, never SQL text.
            with connect() as conn, conn.transaction():
                conn.execute("SELECT castle.login(%s)", (token,))
                rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
        except InvalidAuthorizationSpecification:
            return self.reply(401, UNAUTHORIZED)
        self.reply(200, [{"id": id, "body": body} for id, body in rows])

    def sign_out(self):
        token = self.bearer()
        if token is None:
            return self.reply(401, UNAUTHORIZED)
        with connect() as conn:
            revoked = conn.execute("SELECT castle.revoke(%s)", (token,)).fetchone()[0]
        self.reply(204 if revoked else 401, None if revoked else UNAUTHORIZED)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
