"""Past one machine: Ray Serve and runner actors (`ray`), on the shared Postgres checkpoints and queue of
`refineloop.apps.postgres`.

Both import their heavy, optional dependencies (psycopg, ray) only when used: they ship as the
extras `refineloop[postgres]` and `refineloop[ray]`, and the base install never needs them.
"""

from __future__ import annotations

from refineloop.apps.postgres import check_url
from refineloop.errors import ScaleError


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
