"""The built-in backends, registered in the one table every backend goes through.

A new backend is its own module holding its `Backend` entry, plus one line in `BUILT_INS` below.
Order matters only where two entries could claim one spec: the first listed is asked first.
"""

from __future__ import annotations

from refineloop.backends.chat.ollama import OLLAMA_BACKEND
from refineloop.backends.chat.openai_compatible import OPENAI_BACKEND
from refineloop.backends.demo import DEMO_BACKEND
from refineloop.backends.demo.sketch import SKETCH_BACKEND
from refineloop.backends.image.a1111.entry import A1111_BACKEND
from refineloop.backends.image.comfyui.entry import COMFYUI_BACKEND
from refineloop.backends.image.diffusers.entry import DIFFUSERS_BACKEND
from refineloop.backends.image.diffusers.single_file import SINGLE_FILE_BACKEND
from refineloop.backends.table import Backend, BackendTable

BUILT_INS: tuple[Backend, ...] = (
    SKETCH_BACKEND,
    SINGLE_FILE_BACKEND,
    DIFFUSERS_BACKEND,
    COMFYUI_BACKEND,
    A1111_BACKEND,
    DEMO_BACKEND,
    OLLAMA_BACKEND,
    OPENAI_BACKEND,
)

#: The process's table: the built-ins, and whatever a plugin registers with `BACKENDS.register(entry)`.
BACKENDS = BackendTable(entries=list(BUILT_INS))
