"""A run's settings checked whole: the knobs (RunSettings.validate) and the models they name (the backend table).

Every entry point that is about to make a folder or load a model calls `validated`; every one that tells the user
about ignored settings calls `all_warnings`.
"""

from __future__ import annotations

from refineloop.backends.builtin import BACKENDS
from refineloop.backends.table import BackendTable
from refineloop.settings import RunSettings, settings_warnings


def validated(settings: RunSettings, table: BackendTable = BACKENDS) -> RunSettings:
    """`settings`, after every knob and every model spec passed its checks (SettingsError names the fix)."""
    settings.validate()
    table.check_run(settings)
    return settings


def all_warnings(settings: RunSettings, table: BackendTable = BACKENDS) -> list[str]:
    """The `warning:` lines of settings this run ignores: strategy knobs and unused backends' options."""
    return [*settings_warnings(settings), *table.option_warnings(settings)]
