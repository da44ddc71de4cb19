"""Upgrades: a database on an earlier release's SQL, with live sessions, is
updated with ALTER EXTENSION; its tokens keep working and its catalog ends up
exactly as a fresh install's."""
import psycopg
import pytest

import seed_algorithm
from conftest import create, dsn, user_of

CATALOG = """
SELECT 'function ' || p.oid::regprocedure::text || ' ' || pg_get_function_arguments(p.oid)
       || ' -> ' || coalesce(pg_get_function_result(p.oid), 'procedure')
       || format(' vol=%s strict=%s par=%s secdef=%s config=%s src=%s acl=%s',
                 p.provolatile, p.proisstrict, p.proparallel, p.prosecdef, p.proconfig,
                 CASE WHEN p.prolang = 13 THEN p.prosrc ELSE md5(p.prosrc) END, p.proacl)
  FROM pg_proc p WHERE p.pronamespace = 'castle'::regnamespace
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'castle'
UNION ALL
SELECT format('column %s.%s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
              a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'castle'::regnamespace
UNION ALL
SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
  FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'castle_sessions') AND deptype = 'e'
UNION ALL
SELECT format('table %s owner %s acl %s', relname, relowner::regrole, coalesce(relacl::text, 'default'))
  FROM pg_class WHERE relnamespace = 'castle'::regnamespace AND relkind = 'r'
UNION ALL
SELECT 'config dump ' || extconfig::regclass[]::text FROM pg_extension WHERE extname = 'castle_sessions'
ORDER BY 1
"""


def fresh_database(admin, name):
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.execute(f"CREATE DATABASE {name}")


def old_session(conn, user):
    """A session as an earlier release stored it, and its token: written with
    the seed's algorithm, since the new library refuses to write through old
    SQL objects (it says to run ALTER EXTENSION ... UPDATE)."""
    secret = seed_algorithm.new_secret()
    session_id = conn.execute(
        "INSERT INTO castle.sessions (hash, user_id, expires_at, data) "
        "VALUES (%s, %s, now() + interval '1 day', '{\"device\": \"old\"}') RETURNING id",
        (seed_algorithm.stored_hash(secret), user)).fetchone()[0]
    return seed_algorithm.token(session_id, secret)


@pytest.mark.parametrize("release", ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0"])
def test_update_keeps_tokens_and_matches_a_fresh_install(conn, release):
    fresh_database(conn, "castle_old")
    fresh_database(conn, "castle_new")
    current = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'castle_sessions'"
                           ).fetchone()[0]
    assert current != release
    for role in ("castle_upgrade_request", "castle_upgrade_sign_in"):
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f"CREATE ROLE {role}")
    try:
        with psycopg.connect(dsn("castle_old"), autocommit=True) as old:
            old.execute(f"CREATE EXTENSION castle_sessions VERSION '{release}'")
            tokens = {old_session(old, f"upgrader-{i}"): f"upgrader-{i}" for i in range(5)}
            for tok, user in tokens.items():
                assert user_of(old, tok) == user
            if release == "0.6.0":
                # 0.7.0 adds objects only a shard uses: 0.6.0's work as they are
                assert user_of(old, create(old, "upgrader-new")) == "upgrader-new"
            else:
                with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="older than its library"):
                    create(old, "upgrader-new")
            old.execute("ALTER EXTENSION castle_sessions UPDATE")
            assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'castle_sessions'"
                               ).fetchone()[0] == current
            for tok, user in tokens.items():
                assert user_of(old, tok) == user
            # and the new API works on the old sessions
            some = next(iter(tokens))
            assert old.execute("SELECT count(*) FROM castle.sessions_of(%s)", (tokens[some],)).fetchone()[0] == 1
            rotated = old.execute("SELECT castle.rotate(%s)", (some,)).fetchone()[0]
            # within castle.rotate_grace the old token stands for its successor
            assert user_of(old, rotated) == tokens[some]
            assert old.execute("SELECT (castle.verify(%s)).id = (castle.verify(%s)).id",
                               (some, rotated)).fetchone()[0] is True
            # every existing session started a family of its own
            assert old.execute("SELECT count(*) FROM castle.sessions WHERE family_id IS NOT NULL"
                               ).fetchone()[0] == 1
            # the documented step after an update: the roles get exactly this version's sets
            old.execute("SELECT castle.grant_request_role('castle_upgrade_request')")
            old.execute("SELECT castle.grant_sign_in_role('castle_upgrade_sign_in')")
            upgraded = [r[0] for r in old.execute(CATALOG)]
        with psycopg.connect(dsn("castle_new"), autocommit=True) as new:
            new.execute("CREATE EXTENSION castle_sessions")
            new.execute("SELECT castle.grant_request_role('castle_upgrade_request')")
            new.execute("SELECT castle.grant_sign_in_role('castle_upgrade_sign_in')")
            fresh = [r[0] for r in new.execute(CATALOG)]
        assert upgraded == fresh
    finally:
        conn.execute("DROP DATABASE IF EXISTS castle_old")
        conn.execute("DROP DATABASE IF EXISTS castle_new")
        conn.execute("DROP ROLE IF EXISTS castle_upgrade_request")
        conn.execute("DROP ROLE IF EXISTS castle_upgrade_sign_in")
