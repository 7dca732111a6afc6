"""A new run's folder opened for the run: made and locked, the libraries' log records going to its trace.

The CLI opens it before the image model loads (and before LangGraph is imported, when the first image is begun
early: refineloop.apps.head_start), so no other run can take the folder while the model loads, and what the
libraries log while loading and drawing that first image is kept in the trace like the rest of the run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from refineloop.apps.library_logs import library_logs_in_trace
from refineloop.backends.image import head_start
from refineloop.run_folder.folder import NewRunFolder, new_run_folder
from refineloop.run_start import ResolvedRun


@dataclass
class OpenedRun:
    """A new run resolved, with its folder claimed."""

    run: ResolvedRun
    claim: NewRunFolder
    """The folder, made and locked; what to take back if the run never reaches a checkpoint."""
    critic_note: str | None = None
    """What the Ollama critic holds, for the line naming the models, when it was loaded already (before the
    image model, by the head start); None when it is still to load."""

    def take_back(self) -> None:
        """On a stop before the run's first checkpoint: ask a server to drop a first image still drawn ahead
        (refineloop.backends.image.head_start.stop), and remove what the run made in its folder."""
        head_start.stop()
        self.claim.discard()


@contextmanager
def opened_run(run: ResolvedRun) -> Iterator[OpenedRun]:
    """Claim `run`'s folder (refineloop.run_folder.folder.new_run_folder: a failure before the first checkpoint
    takes back what was made) and keep the libraries' logs in its trace, for the block; the settings name the
    folder as made."""
    with new_run_folder(run.settings.output_dir, named=run.named) as claim, library_logs_in_trace(claim.path):
        run.settings.output_dir = claim.path
        yield OpenedRun(run, claim)
