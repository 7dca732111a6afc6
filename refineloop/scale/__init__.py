"""Past one machine: shared Postgres checkpoints and queue (`postgres`), Ray Serve and runner actors (`ray`).

Both submodules import their heavy, optional dependencies (psycopg, ray) only when used: they ship as the
extras `refineloop[postgres]` and `refineloop[ray]`, and the base install never needs them.
"""

from __future__ import annotations

from refineloop.errors import RefineError


class ScaleError(RefineError):
    """Postgres or the Ray cluster cannot be used; the message is one line saying what to do."""


class RunBusyError(RefineError):
    """Another process holds the run's lock: it is being run somewhere else right now."""


def missing_extra(package: str, extra: str) -> ScaleError:
    """The one-line error for an optional dependency that is not installed."""
    return ScaleError(f"{package} is not installed: pip install 'refineloop[{extra}]'")


def check_storage(url: str, address: str) -> None:
    """Refuse, in one line, a cluster given by address without Postgres: its runners may sit on other hosts,
    which cannot share the batch folder's SQLite files and file locks."""
    if address and not url:
        raise ScaleError(
            "--address joins a Ray cluster whose runners may run on other hosts, and SQLite checkpoints cannot be "
            "shared between hosts: add --checkpointer postgres://user@host:port/db, or drop --address to run "
            "Ray on this machine"
        )
    if url:
        check_url(url)


def check_url(url: str) -> str:
    """The URL if it names Postgres (`postgres://` or `postgresql://`), else a one-line ScaleError."""
    if not url.startswith(("postgres://", "postgresql://")):
        raise ScaleError(f"--checkpointer takes a postgres://user@host:port/db URL, got '{url}'")
    return url
