"""Errors a user can act on.

Every error meant for a person derives from :class:`RefineError`; the CLI prints its message as one line
and exits with a non-zero code, never with a traceback.
"""


class RefineError(Exception):
    """A problem the user can fix; the message says what to do."""


class SettingsError(RefineError):
    """A flag or setting is out of range or inconsistent."""


class TaskError(RefineError):
    """A task file is missing, unreadable or lacks required keys."""


class ModelError(RefineError):
    """A model cannot be loaded or reached."""


class RunFolderError(RefineError):
    """A run folder is missing, not a run, locked by another process, or damaged."""
