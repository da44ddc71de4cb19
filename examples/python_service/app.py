"""castle_sessions from Python: a tiny notes service on psycopg 3 and the
standard library's HTTP server. A demo, not a framework.

    DATABASE_URL          libpq conninfo or URL, as the request role (notes_app, examples/schema.sql)
    SIGN_IN_DATABASE_URL  the same, as the sign-in role (notes_sign_in)
    PORT          port on 127.0.0.1, default 8000
    SESSION_CACHE_SECONDS  if set above 0, GET /me answers from a cache kept that
                  long at most and emptied by NOTIFY castle_revocations (see SessionCache);
                  needs castle.notify_revocations = on for the database

    POST /sign-in   {"user_id": 1, "password": "..."}  -> 200 {"token": "..."}
    GET  /notes     Authorization: Bearer <token>      -> 200 [{"id": ..., "body": ...}]
    GET  /me        Authorization: Bearer <token>      -> 200 {"session_id": ..., "user_id": "..."}
    POST /sign-out  Authorization: Bearer <token>      -> 204
Any refusal is 401 with the same body.
"""
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from psycopg.errors import InvalidAuthorizationSpecification  # SQLSTATE 28000
from psycopg.types.json import Jsonb

DATABASE_URL = os.environ["DATABASE_URL"]
SIGN_IN_DATABASE_URL = os.environ["SIGN_IN_DATABASE_URL"]
SESSION_CACHE_SECONDS = float(os.environ.get("SESSION_CACHE_SECONDS") or 0)
UNAUTHORIZED = b'{"error": "unauthorized"}'
# The session a token names, and how long it may be believed without asking
# again: until it expires or would be idle past castle.idle_timeout
# (coalesce(used_at, created_at) is the last use before this one, so that is
# never later than the server's own deadline); NULL when neither applies.
WHO = """SELECT id, user_id,
                extract(epoch FROM least(expires_at, coalesce(used_at, created_at)
                                         + nullif(current_setting('castle.idle_timeout')::interval, '0'))
                                   - clock_timestamp())
           FROM castle.authenticate(%s)"""


def connect(url=DATABASE_URL):
    # A connection per request keeps the demo short; a real service would use
    # psycopg_pool, with exactly the same transaction.
    return psycopg.connect(url, autocommit=True)


def password_ok(stored, password):
    _, salt, key = stored.split("$")  # 'scrypt$<salt hex>$<key hex>', see examples/schema.sql
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=16384, r=8, p=1, dklen=32)
    return hmac.compare_digest(got.hex(), key)


class SessionCache:
    """sha256(token) -> (session id, user id), for GET /me only.

    Only /me: /notes must call castle.login in its own transaction, because
    the row-level security policy reads castle.user_id(), which only
    castle.login can set, in that backend, for that transaction. A cached
    answer cannot stand in for it; and as /notes must query the database
    anyway, it would save one statement of a transaction run regardless. /me
    only asks who the token is, which is all the cache holds.

    An entry lives SESSION_CACHE_SECONDS at most, and never past the session's
    expiry or idle timeout. A revocation evicts it at once, by NOTIFY (listen()
    below), so the cache is believed only while that listener is known to be
    connected: with it down, every lookup goes to the database. Keyed by a
    hash, so the cache's memory holds no token. Refusals are never cached.
    A hit records no use (used_at), and a token castle.rotate replaced, seen
    within castle.rotate_grace, may answer here for up to the lifetime past
    the grace: /notes, through castle.login, still refuses it as a reuse."""

    MOST_ENTRIES = 100_000  # a bound on memory; emptying costs only re-checks

    def __init__(self, seconds):
        self.seconds = seconds
        self.lock = threading.Lock()  # the HTTP server runs a thread per request
        self.entries = {}  # key -> (session id, user id, monotonic deadline)
        self.generation = 0  # bumped by every eviction: see put()
        self.trusted_until = 0.0  # pushed on by the listener after each round trip

    def get(self, key):
        with self.lock:
            entry = self.entries.get(key)
            if entry and time.monotonic() < min(entry[2], self.trusted_until):
                return entry[:2]
            return None

    def mark(self):
        """Taken before asking the database, for put()."""
        with self.lock:
            return self.generation, time.monotonic()

    def put(self, key, session_id, user_id, seconds_left, mark):
        generation, asked = mark
        lifetime = self.seconds if seconds_left is None else min(self.seconds, float(seconds_left))
        with self.lock:
            # Anything evicted since the database was asked may be this very
            # session, revoked just after it answered: then keep nothing.
            if generation != self.generation or time.monotonic() >= self.trusted_until:
                return
            if len(self.entries) >= self.MOST_ENTRIES:
                self.entries.clear()
            self.entries[key] = (session_id, user_id, asked + lifetime)

    def evict(self, drop=lambda key, entry: True):
        with self.lock:
            self.generation += 1
            self.entries = {k: e for k, e in self.entries.items() if not drop(k, e)}

    def revoked(self, payload):
        """One castle_revocations notification: evict the sessions it names, and
        for a user's revocation all that user's entries; everything when it
        says "all" (too many to name) or cannot be read."""
        try:
            event = json.loads(payload)
            ids, user = event["sessions"], event.get("user")  # no "sessions" with "all"
            named = ("all" not in event and isinstance(ids, list) and all(type(i) is int for i in ids)
                     and isinstance(user, (str, type(None))))
        except (ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
            named = False
        if not named:
            return self.evict()
        ids = set(ids)
        self.evict(lambda key, entry: entry[0] in ids or entry[1] == user)

    def trust(self, seconds):
        with self.lock:
            self.trusted_until = time.monotonic() + seconds


HEARTBEAT = 2  # seconds between the listener's round trips


def listen(cache):
    """The cache's thread: LISTEN on a connection of its own, forever."""
    said = None  # the last thing printed, so a retry loop prints each failure once
    while True:
        try:
            with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
                # The DBA's switch; without it no revocation would ever arrive.
                on = conn.execute("SELECT current_setting('castle.notify_revocations', true)::boolean").fetchone()[0]
                if not on:
                    raise RuntimeError("castle.notify_revocations is off for this database")
                conn.execute("LISTEN castle_revocations")
                # Revocations before LISTEN never reach us: forget all, and any
                # answer in flight (evict() bumps the generation).
                cache.evict()
                cache.trust(2 * HEARTBEAT)
                said = "session cache: listening for castle_revocations"
                print(said, flush=True)
                while True:
                    for notify in conn.notifies(timeout=HEARTBEAT):
                        cache.revoked(notify.payload)
                    # A connection that died without a word (a cable, a firewall)
                    # would let notifies() wait forever; this round trip has to
                    # succeed before trust() is renewed.
                    conn.execute("SELECT 1")
                    cache.trust(2 * HEARTBEAT)
        except Exception as e:  # any failure: believe nothing until listening again
            cache.trust(0)
            cache.evict()
            if str(e) != said:
                said = str(e)
                print(f"session cache off, retrying: {said}", file=sys.stderr, flush=True)
            time.sleep(HEARTBEAT)


CACHE = SessionCache(SESSION_CACHE_SECONDS) if SESSION_CACHE_SECONDS > 0 else None


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
        elif self.path == "/me":
            self.me()
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
            # Never from the cache: see SessionCache.
            with connect() as conn, conn.transaction():
                conn.execute("SELECT castle.login(%s)", (token,))
                rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
        except InvalidAuthorizationSpecification:
            return self.reply(401, UNAUTHORIZED)
        self.reply(200, [{"id": id, "body": body} for id, body in rows])

    def me(self):
        token = self.bearer()
        if token is None:
            return self.reply(401, UNAUTHORIZED)
        key = hashlib.sha256(token.encode()).digest()
        found = CACHE.get(key) if CACHE else None
        if found is None:
            mark = CACHE.mark() if CACHE else None
            try:
                with connect() as conn:
                    session_id, user_id, seconds_left = conn.execute(WHO, (token,)).fetchone()
            except InvalidAuthorizationSpecification:
                return self.reply(401, UNAUTHORIZED)
            if CACHE:
                CACHE.put(key, session_id, user_id, seconds_left, mark)
            found = session_id, user_id
        self.reply(200, {"session_id": found[0], "user_id": found[1]})

    def sign_out(self):
        token = self.bearer()
        if token is None:
            return self.reply(401, UNAUTHORIZED)
        with connect() as conn:
            revoked = conn.execute("SELECT castle.revoke(%s)", (token,)).fetchone()[0]
        if revoked and CACHE:
            # The notification would do it too, a moment later.
            key = hashlib.sha256(token.encode()).digest()
            CACHE.evict(lambda k, entry: k == key)
        self.reply(204 if revoked else 401, None if revoked else UNAUTHORIZED)


if __name__ == "__main__":
    if CACHE:
        threading.Thread(target=listen, args=(CACHE,), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
