"""Past one machine: shared Postgres checkpoints and queue (`postgres`), Ray Serve and runner actors (`ray_engine`).

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
