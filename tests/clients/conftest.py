"""The client stacks (issue #20 and after): real frameworks from their
registries, started as processes and driven over HTTP against the cluster
scripts/suite.sh started. They run on one major (Debian's 15), not four."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the independent implementation of the seed's token format
sys.path.insert(0, str(ROOT / "tests" / "integration"))

PORT = os.environ["PGPORT"]
PG_BIN = os.environ["PG_BIN"]
CLUSTER = Path(os.environ["CASTLE_CLUSTER_DIR"])


def dsn(dbname="postgres", **extra):
    parts = {"host": "127.0.0.1", "port": PORT, "user": "postgres", "dbname": dbname, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())
