"""Where a pipeline's files come from: a local folder or a Hugging Face hub id, checked before the slow load.

A spec is resolved to a `Source` that `from_pretrained` can take, failing fast with a one-line ModelError
when a folder is not a pipeline or an uncached hub id cannot be downloaded. huggingface_hub is imported
inside the functions, and its environment variables are read at call time, not at import.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from refineloop.backends.image.diffusers.messages import one_line
from refineloop.errors import ModelError

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_VARIANT_TAGS = (".fp16.", ".bf16.", ".fp32.")
_HUB_PROBE_SECONDS = 3.0


@dataclass(frozen=True)
class Source:
    """What `from_pretrained` gets: a local folder, or a hub id still to be downloaded."""

    target: str
    """The folder or hub id handed to `from_pretrained`."""
    folder: Path | None
    """The pipeline folder on disk (a cached snapshot for a hub id); None while it still has to be downloaded."""
    repo_id: str | None
    """The hub id, or None for a plain local folder."""
    local_only: bool
    """Whether the load must not touch the network."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """HF offline mode, read at call time (huggingface_hub reads the variables only once, at import)."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The hub cache folder, honouring HF_HUB_CACHE / HF_HOME as they are now, not at import time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id`, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # any failure here just means "not usable from the cache"
        return None


def hub_reachable() -> bool:
    """Whether the hub's host accepts a TCP connection within a few seconds.

    Without this, `from_pretrained` on a machine with no network retries for ~23 s before failing.
    Behind a proxy a direct connection says nothing, so the probe is skipped and the download tried.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=_HUB_PROBE_SECONDS):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    # A thread bounds the DNS lookup too, which socket timeouts do not cover.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(_HUB_PROBE_SECONDS + 1.0)
    return bool(outcome and outcome[0])


def read_index(folder: Path, shown: str) -> dict[str, Any]:
    """model_index.json of a pipeline folder, checked: every listed component has its subfolder."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelError(
            f"{shown} is not a diffusers pipeline: it has no model_index.json; pass a folder written by "
            "save_pretrained or downloaded from a diffusers-format repo"
        )
    try:
        index: dict[str, Any] = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        detail = one_line(exc)
        raise ModelError(f"{shown} has an unreadable model_index.json ({detail}); re-save or re-download it") from exc
    missing = [name for name in component_names(index) if not (folder / name).is_dir()]
    if missing:
        listed = ", ".join(missing)
        raise ModelError(
            f"{shown} lacks the {listed} folder(s) that its model_index.json lists; re-save or re-download it"
        )
    return index


def component_names(index: dict[str, Any]) -> list[str]:
    """Components a model_index.json declares as present (entries set to [null, null] are absent)."""
    names = []
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is not None and value[1] is not None:
            names.append(key)
    return names


def remote_index(repo_id: str) -> dict[str, Any] | None:
    """model_index.json of a hub repo about to be downloaded (a few kB), or None when unavailable."""
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(repo_id, cache_dir=hub_cache_dir()))
    except Exception:  # only decides optional kwargs; the load itself reports real errors
        return None


def resolve_source(spec: str) -> Source:
    """Turn a user's spec into something loadable, failing fast with a one-line ModelError."""
    raw = spec.strip()
    if raw.startswith("hf:"):
        raw = raw[3:]
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"'{raw}' is a file; pass a diffusers pipeline folder (with model_index.json)")
        read_index(path, f"folder '{raw}'")
        return Source(str(path), path, None, True)
    looks_like_path = raw.startswith((".", "/", "~")) or raw.count("/") != 1 or "\\" in raw
    if looks_like_path:
        raise ModelError(
            f"'{raw}' is neither an existing folder nor a Hugging Face id (org/name): check the path or id"
        )
    repo_id = raw
    snapshot = cached_snapshot(repo_id)
    cached = "not"
    if snapshot is not None:
        try:
            read_index(snapshot, f"hf model '{repo_id}' in the cache")
            return Source(str(snapshot), snapshot, repo_id, True)
        except ModelError:
            # A partial download: an online load fetches the rest.
            cached = "only partly"
    if hub_offline() or not hub_reachable():
        raise ModelError(
            f"hf model '{repo_id}' is {cached} in the local Hugging Face cache and the hub cannot be reached: "
            f"run `hf download {repo_id}` on a machine with internet, or pass a local folder"
        )
    return Source(repo_id, None, repo_id, False)


def weight_bytes(folder: Path, components: Sequence[str] | None = None) -> tuple[int, int]:
    """Bytes of the weights a load reads from `folder`: (total, largest single component).

    Counts only component subfolders (a repo may also hold a single-file checkpoint at its root), prefers
    safetensors over .bin and plain files over precision variants, as `from_pretrained` does by default.
    """
    if components is None:
        components = [p.name for p in folder.iterdir() if p.is_dir()]
    sizes: list[int] = []
    for name in components:
        files = [p for p in (folder / name).rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)]
        plain = [p for p in files if not any(tag in p.name for tag in _VARIANT_TAGS)]
        chosen = plain or files
        safe = [p for p in chosen if p.name.endswith(".safetensors")]
        chosen = safe or chosen
        # stat() follows the hub cache's symlinks to the blobs, so this is the real size.
        sizes.append(sum(p.stat().st_size for p in chosen))
    return sum(sizes), max(sizes, default=0)
