"""The core and lifecycle suites of tests/integration, run against a router
database instead of one server (docs/sharding.md): every call they make
goes through castle_sessions_router to four shards. What they read of the
table directly, they read from the shards (postgres_fdw). Tests that hold
only for one server skip themselves by name, with the reason."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import PORT_A, SHARDS, BOUNCER, PORT_B, make_router, with_sessions_table

SUITES = ["tests/integration/test_core.py", "tests/integration/test_lifecycle.py"]


def test_core_and_lifecycle_suites_pass_through_the_router(shard_set):
    make_router(PORT_A, "castle_py_router", SHARDS)
    with_sessions_table(PORT_A, "castle_py_router", [(PORT_B if p == BOUNCER else p, db) for p, db in SHARDS])
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PGPORT=str(PORT_A), CASTLE_TEST_DB="castle_py_router", CASTLE_VIA_ROUTER="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *SUITES],
                         cwd=repo, env=env, capture_output=True, text=True)
    print(run.stdout[-6000:], run.stderr[-2000:])
    assert run.returncode == 0, "a core or lifecycle test failed through the router (output above)"
    assert " passed" in run.stdout
