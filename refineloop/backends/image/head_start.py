"""A first image drawn ahead, in a thread, while the rest of the run starts up; handed over only when it is the
image asked for.

Importing LangGraph and LangChain, probing the critic, compiling the graph and opening the checkpoints take a
second or more of start-up that does not need the image model, while the first draw needs nothing else. So the
CLI begins the first draw as soon as the image model is loaded (`begin`), and the generate node, before it draws,
asks for it (`take`) with the request it built itself: the images come back only when the model, the run folder
and the request are all the same; anything else discards them and the node draws as it would have. Diffusion
spends its time in torch's kernels, which release Python's lock, so the imports and the draw share the CPU.

A pipeline is not safe to call from two threads at once, so `take` always waits for a draw in flight on the same
model before it returns, used or not. A draw that failed is discarded, and the node draws again itself: an error
then comes from the node's own call, as without a head start.

The draw's denoising steps are kept (refineloop.progress_events.HeldProgress) until `take` hands them to the
node's own listener, so the console shows the first image's steps like any other's. A stop that ends the waiting
(`take` interrupted, or the process stopping before the run begins) asks a server backend to drop the prompt it is
drawing (`stop`), as a stop during the node's own call does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from refineloop.progress_events import HeldProgress, reporting

if TYPE_CHECKING:
    from PIL import Image

    from refineloop.backends.image.protocol import ImageModel, ImageRequest

#: What became of a head start when the node took its round: used, or discarded (another request, or it failed).
Fate = Literal["used", "discarded"]


@dataclass(eq=False)
class _Draw:
    model: ImageModel
    request: ImageRequest
    run_dir: str
    done: threading.Event = field(default_factory=threading.Event)
    images: list[Image.Image] | None = None
    progress: HeldProgress = field(default_factory=HeldProgress)
    stopped: bool = False

    def run(self) -> None:
        try:
            with reporting(self.progress):
                self.images = self.model.generate(self.request)
        except Exception:  # discarded: the node's own call meets the same error, where it is reported as usual
            self.images = None
        finally:
            self.done.set()

    def stop(self) -> None:
        """Ask the model to drop this draw, once, if it is still going (a server interrupts its prompt; a
        pipeline in this process has nothing to ask, and ends with the process)."""
        if self.stopped or self.done.is_set():
            return
        self.stopped = True
        interrupt = getattr(self.model, "interrupt", None)
        if callable(interrupt):
            interrupt()


_lock = threading.Lock()
_pending: list[_Draw] = []


def begin(model: ImageModel, request: ImageRequest, run_dir: str) -> None:
    """Start drawing `request` on `model` in a daemon thread, for the run in `run_dir` to take."""
    draw = _Draw(model, request, run_dir)
    with _lock:
        earlier = list(_pending)
        _pending[:] = [draw]
    for old in earlier:  # never two draws on one pipeline at once
        old.done.wait()
    threading.Thread(target=draw.run, name="refineloop-head-start", daemon=True).start()


def take(model: ImageModel, request: ImageRequest, run_dir: str) -> tuple[list[Image.Image] | None, Fate | None]:
    """The images drawn ahead for exactly this request, model and run, and what became of the head start (None:
    there was none for this model). Waits for a draw in flight on `model`, so the caller may then use it."""
    with _lock:
        draw = next((draw for draw in _pending if draw.model is model), None)
    if draw is None:
        return None, None
    draw.progress.hand_over()
    try:
        draw.done.wait()  # still listed while it draws: the next caller waits on it too
    except KeyboardInterrupt:  # a stop that does not wait for the image
        draw.stop()
        raise
    with _lock:
        _pending[:] = [other for other in _pending if other is not draw]
    if draw.images is not None and draw.request == request and draw.run_dir == run_dir:
        return draw.images, "used"
    return None, "discarded"


def stop() -> None:
    """Ask every draw still going to stop (the process is stopping before the run has taken it)."""
    with _lock:
        drawing = list(_pending)
    for draw in drawing:
        draw.stop()


def pending() -> bool:
    """Whether a head start is waiting to be taken (or discarded)."""
    with _lock:
        return bool(_pending)
