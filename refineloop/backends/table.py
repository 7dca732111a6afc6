"""The backend table: one entry per way of reaching a model, the one door every backend comes through.

An entry says which model specs are its own (`claims`), how such a spec is checked before anything loads
(`check`, pure: no network, no weights), how it loads (`load`), which run settings it reads (`options`, so a
setting given for a backend nobody uses is pointed out) and its line in `--help` (`syntax`, `summary`). The
built-ins (refineloop.backends.builtin) register through it exactly as a plugin or a test fake does, so
adding a backend is one module holding its entry plus one line in that list.

A `ModelCache` holds a child table over the built-in one: a model object built in Python (a test fake, a
remote handle, the Python API's own models) is registered there under a plain name and shadows nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from refineloop.errors import ModelError, SettingsError
from refineloop.settings import changed_flags
from refineloop.strategies import spec_for

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from refineloop.backends.image.protocol import ImageModel
    from refineloop.settings import RunSettings

Kind = Literal["image", "chat"]
#: The flag that names a model of each kind (the critic's; agent and audit models are chat models too).
FLAGS: dict[Kind, str] = {"image": "--image-model", "chat": "--eval-model"}


def _no_check(spec: str) -> None:
    """Specs whose only rule is the one `claims` already applied."""


@dataclass(frozen=True)
class Backend:
    """One way of reaching a model: how its specs look, are checked and load."""

    name: str
    """Short name shown in listings (`diffusers`, `ollama`)."""
    kind: Kind
    """Whether it draws images or answers chat (critic, proposer, agent, auditor)."""
    syntax: str
    """How a spec for it is written, as `--help` shows it (`hf:<hub id> | DIR`)."""
    summary: str
    """One line on what it is, for `--help` and the docs."""
    claims: Callable[[str], bool]
    """Whether a spec belongs to this backend, by its shape (a prefix, a suffix, a fixed name)."""
    load: Callable[..., Any]
    """Image backends: `load(spec, settings) -> ImageModel`; chat backends: `load(spec, settings, vision)`,
    where `vision` says whether the model must be able to see images (the critic must, an agent need not)."""
    check: Callable[[str], None] = _no_check
    """Raise SettingsError with a one-line fix when a claimed spec can never load; pure. The message follows the
    quoted spec, so it starts with a verb: "needs a hub id after hf: (e.g. ...)"."""
    options: tuple[str, ...] = ()
    """RunSettings fields only this backend reads (how it is reached): given while it is unused, they warn."""
    loras: bool = False
    """Whether `--lora` adapters can be loaded into it."""
    img2img: bool = True
    """Whether it can start an image from another (img2img strategy, --init-image)."""
    samplers: bool = False
    """Whether `--scheduler` can choose its sampler."""
    steps: bool = True
    """Whether it draws with the run's denoising steps (`--steps`), so `--draft-steps` makes a cheaper draft."""


@dataclass
class BackendTable:
    """Entries in the order they are asked; a child table asks its own entries first, then its parent's."""

    parent: BackendTable | None = None
    entries: list[Backend] = field(default_factory=list)

    def register(self, backend: Backend) -> Backend:
        """Add `backend`; an entry of the same kind and name is replaced (a plugin may override a built-in)."""
        self.entries[:] = [e for e in self.entries if (e.kind, e.name) != (backend.kind, backend.name)]
        self.entries.insert(0, backend)
        return backend

    def all(self, kind: Kind | None = None) -> Iterator[Backend]:
        """Every entry this table can reach, its own first; `kind` keeps one kind."""
        seen: set[tuple[str, str]] = set()
        table: BackendTable | None = self
        while table is not None:
            for entry in table.entries:
                if (kind is None or entry.kind == kind) and (entry.kind, entry.name) not in seen:
                    seen.add((entry.kind, entry.name))
                    yield entry
            table = table.parent

    def find(self, kind: Kind, spec: str) -> Backend | None:
        """The entry that claims `spec`, or None."""
        return next((entry for entry in self.all(kind) if entry.claims(spec)), None)

    def syntaxes(self, kind: Kind) -> str:
        """`sketch, hf:<hub id> | DIR or ...`: every spec shape of a kind, for an error line."""
        shapes = [entry.syntax for entry in self.all(kind) if entry.summary]
        return f"{', '.join(shapes[:-1])} or {shapes[-1]}" if len(shapes) > 1 else "".join(shapes)

    def check(self, kind: Kind, flag: str, spec: str) -> Backend | None:
        """Refuse a spec that can never load, in one line naming `flag`: empty, an unknown `prefix:`, or one its
        backend's own check refuses. A plain name nobody claims may still be a model registered in Python."""
        fix = f"use {self.syntaxes(kind)}"
        if not spec.strip():
            raise SettingsError(f"{flag} is empty: {fix}")
        entry = self.find(kind, spec)
        if entry is None:
            prefix, colon, _ = spec.partition(":")
            if colon and prefix.isidentifier() and kind == "chat":
                raise SettingsError(f"{flag} '{spec}' is not a model: {fix}")
            return None
        try:
            entry.check(spec)
        except SettingsError as exc:  # each check words its problem to follow the spec: "'hf:' needs a hub id"
            raise SettingsError(f"{flag} '{spec}' {exc}") from None
        return entry

    def check_run(self, settings: RunSettings) -> None:
        """Every model a run names, checked before anything loads (SettingsError with the fix)."""
        image = self.check("image", FLAGS["image"], settings.image_model)
        if settings.lora and image is not None and not image.loras:
            takers = " or ".join(entry.syntax for entry in self.all("image") if entry.loras)
            raise SettingsError(f"--lora needs an image model that takes LoRAs ({takers}); {image.name} takes none")
        if settings.scheduler and image is not None and not image.samplers:
            takers = " or ".join(entry.syntax for entry in self.all("image") if entry.samplers)
            raise SettingsError(
                f"--scheduler {settings.scheduler} needs an image model that samples ({takers}); {image.name} "
                "draws without a sampler: drop --scheduler"
            )
        if settings.draft_steps and image is not None and not image.steps:
            raise SettingsError(
                f"--draft-steps needs an image model that draws in steps; {image.name} has none: use --draft-size "
                "for cheaper drafts, or drop --draft-steps"
            )
        starts_from_picture = bool(settings.init_image) or spec_for(settings.strategy).from_image
        if image is not None and not image.img2img and starts_from_picture:
            asked = "--init-image" if settings.init_image else f"--strategy {settings.strategy}"
            raise SettingsError(f"{asked} starts images from a picture, which {image.name} models cannot do")
        self.check("chat", FLAGS["chat"], settings.eval_model)
        for flag, spec in (("--agent-model", settings.agent_model), ("--audit-model", settings.audit_model)):
            if spec:  # empty means: the critic's own model (agent), no audit (auditor)
                self.check("chat", flag, spec)

    def option_warnings(self, settings: RunSettings) -> list[str]:
        """One line per backend whose own settings were given while no model of the run uses it."""
        used = {settings.image_model, settings.eval_model, settings.agent_model, settings.audit_model} - {""}
        found = []
        for entry in self.all():
            flags = changed_flags(settings, *entry.options)
            if flags and not any(entry.claims(spec) for spec in used):
                found.append(
                    f"warning: {' and '.join(flags)} only serve{'' if len(flags) > 1 else 's'} {entry.syntax} "
                    "models, and none is used here"
                )
        return found

    def load_image(self, settings: RunSettings) -> ImageModel:
        """The image model `settings.image_model` names, loaded by the entry that claims it."""
        entry = self.find("image", settings.image_model)
        if entry is None:
            raise ModelError(f"unknown image model '{settings.image_model}': {self.syntaxes('image')}")
        if settings.lora and not entry.loras:
            raise ModelError(f"--lora needs an image model that takes LoRAs; {entry.name} takes none")
        model: ImageModel = entry.load(settings.image_model, settings)
        return model

    def load_chat(self, spec: str, settings: RunSettings, *, vision: bool = True) -> BaseChatModel:
        """The chat model `spec` names, reached as `settings` say, checked for vision unless `vision` is False."""
        entry = self.find("chat", spec)
        if entry is None:
            raise ModelError(f"unknown chat model '{spec}': use {self.syntaxes('chat')}")
        model: BaseChatModel = entry.load(spec, settings, vision)
        return model


def fixed(name: str) -> Callable[[str], bool]:
    """`claims` for a backend spelled as one fixed word, optionally followed by `:options`."""
    return lambda spec: spec == name or spec.startswith(name + ":")


def prefixed(prefix: str) -> Callable[[str], bool]:
    """`claims` for specs written `prefix:rest`."""
    return lambda spec: spec.startswith(prefix + ":")


def registered(name: str, kind: Kind, model: Any) -> Backend:
    """An entry for a model object built in Python, answering to exactly `name`."""
    if kind == "image":
        load: Callable[..., Any] = lambda spec, settings: model  # noqa: E731
    else:
        load = lambda spec, settings, vision: model  # noqa: E731
    return Backend(name=name, kind=kind, syntax=name, summary="", claims=lambda spec: spec == name, load=load)
