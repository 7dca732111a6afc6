"""Session fixtures for the scale tier: a real PostgreSQL and a local Ray, on loopback, torn down at the end.

- `postgres_url`: initdb into a temporary folder and `pg_ctl start` on a free loopback port. initdb refuses to
  run as root, so as root both run as the `postgres` user (Debian's package creates it), in a folder it owns.
- `pg_url`: a fresh database per test on that server (dropped afterwards, connections and all).
- `ray_address`: `ray.init` with 2 CPUs, no dashboard, usage stats off; Serve is shut down before Ray.

Tests that need one of them are skipped, with the reason, when the binaries or extras are missing.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

PG_USER = "postgres"


def _pg_binary(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else the newest Debian install (/usr/lib/postgresql/N/bin)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    """The command as run by an unprivileged user: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["su", PG_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be started here (binaries or user missing); the message says why."""


@contextmanager
def local_postgres() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on a free loopback port; yields the URL of its `postgres` database.

    Raises PostgresUnavailable when the server binaries (or, as root, the `postgres` user) are missing.
    """
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise PostgresUnavailable("PostgreSQL server binaries not found: apt-get install postgresql")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(PG_USER)
        except KeyError:
            raise PostgresUnavailable(f"running as root and no '{PG_USER}' user exists to own the cluster") from None
    folder = Path(tempfile.mkdtemp(prefix="refineloop-pg-"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = free_port()
    try:
        subprocess.run(
            _as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        # fsync off: a test cluster is thrown away, and it roughly halves the cost of every checkpoint.
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        started = subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            detail = log.read_text() if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start: {detail[-800:]}")
        try:
            yield f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session; yields the URL of its `postgres` database."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with ExitStack() as stack:
        try:
            url = stack.enter_context(local_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield url


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray for the session (2 CPUs, no dashboard, no usage stats); yields its GCS address."""
    pytest.importorskip("ray.serve", reason="the ray extra is not installed")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Loopback only: without this Ray rewrites 127.0.0.1 to the machine's network address and dials that.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray import serve

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        serve.shutdown()
        ray.shutdown()
