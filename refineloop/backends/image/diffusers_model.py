"""A diffusers pipeline behind the ImageModel protocol: load, place, read traits, generate.

Torch, diffusers and huggingface_hub are imported inside functions: importing them costs seconds, and this
module is also imported by code paths (CLI help, tests of the pure placement logic) that never load a model.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from refineloop.backends.image.protocol import ImageRequest, ImageTraits
from refineloop.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

FIT_MARGIN = 1.3
"""Weights need headroom on the GPU for activations and the VAE decode: pin only when size * margin fits."""

_GB = 1e9
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_VARIANT_TAGS = (".fp16.", ".bf16.", ".fp32.")
_CLIP_TRUNCATION = "The following part of your input was truncated because CLIP"
_TOKEN_LENGTH = re.compile(r"Token indices sequence length is longer than .*\(\d+ > (\d+)\)")
# Where transformers logs that length warning (a fixed module of the library).
_TOKENIZER_LOGGER = "transformers.tokenization_utils_base"
_HUB_PROBE_SECONDS = 3.0
# Tokenizers without a configured limit report a huge sentinel (int(1e30)) as model_max_length.
_UNSET_MAX_LENGTH = 1_000_000

_DTYPE_NAMES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}
_DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "float32"}


# --------------------------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Where a pipeline runs and why."""

    device: str
    """`cuda:N`, `mps` or `cpu`; with offload, the GPU that executes."""
    dtype: str
    """`bfloat16`, `float16` or `float32`."""
    offload: str
    """`none`, `model` (whole components swap in) or `sequential` (layer by layer, slowest)."""
    reason: str
    """One human line: where, and why."""


def _gb(n: int) -> str:
    return f"{n / _GB:.1f} GB"


def decide_placement(
    free_bytes: Sequence[int],
    model_bytes: int,
    mps: bool,
    *,
    largest_part_bytes: int | None = None,
    bf16: bool = True,
) -> Placement:
    """Choose device, dtype and offload from free memory per GPU and the model's size.

    `free_bytes` lists free memory per CUDA GPU (empty: none). `largest_part_bytes` is the biggest single
    component (model offload keeps one at a time on the GPU); unknown means the whole model counts as one.
    Pure: no torch, so every branch is unit-tested on a machine without a GPU.
    """
    if free_bytes:
        index = max(range(len(free_bytes)), key=lambda i: free_bytes[i])
        free = free_bytes[index]
        device = f"cuda:{index}"
        dtype = "bfloat16" if bf16 else "float16"
        short = _DTYPE_SHORT[dtype]
        if model_bytes * FIT_MARGIN <= free:
            why = f"{_gb(model_bytes)} model fits in {_gb(free)} free"
            return Placement(device, dtype, "none", f"{device} ({short}): {why}")
        part = model_bytes if largest_part_bytes is None else largest_part_bytes
        if part * FIT_MARGIN <= free:
            why = f"{_gb(model_bytes)} model does not fit in {_gb(free)} free, its largest part ({_gb(part)}) does"
            return Placement(device, dtype, "model", f"{device} ({short}, model CPU offload): {why}")
        why = f"not even the largest part ({_gb(part)}) fits in {_gb(free)} free; expect slow steps"
        return Placement(device, dtype, "sequential", f"{device} ({short}, sequential CPU offload): {why}")
    if mps:
        return Placement("mps", "float16", "none", "mps (fp16): Apple GPU found, no CUDA GPU")
    return Placement("cpu", "float32", "none", "cpu (float32): no GPU found")


def _dtype_name(dtype: str) -> str:
    """Normalise a user's dtype spelling (`bf16`, `float16`, ...) or raise a one-line ModelError."""
    name = _DTYPE_NAMES.get(dtype.strip().lower())
    if name is None:
        raise ModelError(f"unknown dtype '{dtype}': use one of bf16, fp16 or fp32")
    return name


def _probe_hardware() -> tuple[list[int], bool, bool]:
    """Free bytes per CUDA GPU, whether Apple MPS is usable, whether the GPUs take bf16."""
    import torch

    free: list[int] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free.append(int(torch.cuda.mem_get_info(i)[0]))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    bf16 = bool(free) and torch.cuda.is_bf16_supported()
    return free, mps, bf16


def _plan(
    device: str | None,
    dtype: str | None,
    model_bytes: int,
    largest_part: int | None,
) -> Placement:
    """The automatic decision, with the caller's `device` / `dtype` overrides taking precedence."""
    if device is not None and device.strip().lower() in ("cpu", "cpu:0"):
        # Asked for the CPU: no need to wake every GPU up just to measure its free memory.
        name = _dtype_name(dtype) if dtype is not None else "float32"
        return Placement("cpu", name, "none", f"cpu ({_DTYPE_SHORT[name]}): device set by caller")
    free, mps, bf16 = _probe_hardware()
    if device is None:
        auto = decide_placement(free, model_bytes, mps, largest_part_bytes=largest_part, bf16=bf16)
        return auto if dtype is None else _with_dtype(auto, _dtype_name(dtype))
    wanted = device.strip().lower()
    kind, _, index_text = wanted.partition(":")
    if kind == "cuda":
        if not free:
            raise ModelError(
                f"device '{device}' asked but torch sees no CUDA GPU: pass --device cpu, "
                "or install a CUDA build of torch"
            )
        if index_text and (not index_text.isdigit() or int(index_text) >= len(free)):
            raise ModelError(
                f"device '{device}' asked but torch sees {len(free)} CUDA GPU(s): use cuda:0 to cuda:{len(free) - 1}"
            )
        # A bare `cuda` means "a GPU": take the freest one rather than whatever is current.
        index = int(index_text) if index_text else max(range(len(free)), key=lambda i: free[i])
        # The caller picks the GPU; how much to offload onto the CPU is still decided from its free memory.
        one = decide_placement([free[index]], model_bytes, False, largest_part_bytes=largest_part, bf16=bf16)
        target = f"cuda:{index}"
        plan = replace(one, device=target, reason=one.reason.replace("cuda:0", target, 1) + "; GPU set by caller")
        return plan if dtype is None else _with_dtype(plan, _dtype_name(dtype))
    if kind == "mps":
        if not mps:
            raise ModelError(f"device '{device}' asked but Apple MPS is not available: pass --device cpu")
        name = _dtype_name(dtype) if dtype is not None else "float16"
        return Placement("mps", name, "none", f"mps ({_DTYPE_SHORT[name]}): device set by caller")
    raise ModelError(f"unknown device '{device}': use cpu, cuda, cuda:N or mps")


def _with_dtype(plan: Placement, name: str) -> Placement:
    """`plan` with the caller's dtype, its line saying so."""
    old, new = _DTYPE_SHORT[plan.dtype], _DTYPE_SHORT[name]
    reason = plan.reason.replace(f"({old}", f"({new}", 1) + "; dtype set by caller"
    return replace(plan, dtype=name, reason=reason)


# --------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    """What `from_pretrained` gets: a local folder, or a hub id still to be downloaded."""

    target: str
    folder: Path | None
    repo_id: str | None
    local_only: bool


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_offline() -> bool:
    """HF offline mode, read at call time (huggingface_hub reads the variables only once, at import)."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache_dir() -> str:
    """The hub cache folder, honouring HF_HUB_CACHE / HF_HOME as they are now, not at import time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id`, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=_hub_cache_dir(), local_files_only=True))
    except Exception:  # any failure here just means "not usable from the cache"
        return None


def _hub_reachable() -> bool:
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


def _read_index(folder: Path, shown: str) -> dict[str, Any]:
    """model_index.json of a pipeline folder, checked: every listed component has its subfolder."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelError(
            f"{shown} is not a diffusers pipeline: it has no model_index.json; pass a folder written by "
            "save_pretrained or downloaded from a diffusers-format repo"
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        detail = _one_line(exc)
        raise ModelError(f"{shown} has an unreadable model_index.json ({detail}); re-save or re-download it") from exc
    missing = [name for name in _component_names(index) if not (folder / name).is_dir()]
    if missing:
        listed = ", ".join(missing)
        raise ModelError(
            f"{shown} lacks the {listed} folder(s) that its model_index.json lists; re-save or re-download it"
        )
    return index


def _component_names(index: dict[str, Any]) -> list[str]:
    """Components a model_index.json declares as present (entries set to [null, null] are absent)."""
    names = []
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is not None and value[1] is not None:
            names.append(key)
    return names


def _resolve(spec: str) -> _Source:
    """Turn a user's spec into something loadable, failing fast with a one-line ModelError."""
    raw = spec.strip()
    if raw.startswith("hf:"):
        raw = raw[3:]
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"'{raw}' is a file; pass a diffusers pipeline folder (with model_index.json)")
        _read_index(path, f"folder '{raw}'")
        return _Source(str(path), path, None, True)
    looks_like_path = raw.startswith((".", "/", "~")) or raw.count("/") != 1 or "\\" in raw
    if looks_like_path:
        raise ModelError(
            f"'{raw}' is neither an existing folder nor a Hugging Face id (org/name): check the path or id"
        )
    repo_id = raw
    snapshot = _cached_snapshot(repo_id)
    cached = "not"
    if snapshot is not None:
        try:
            _read_index(snapshot, f"hf model '{repo_id}' in the cache")
            return _Source(str(snapshot), snapshot, repo_id, True)
        except ModelError:
            # A partial download: an online load fetches the rest.
            cached = "only partly"
    if _hub_offline() or not _hub_reachable():
        raise ModelError(
            f"hf model '{repo_id}' is {cached} in the local Hugging Face cache and the hub cannot be reached: "
            f"run `hf download {repo_id}` on a machine with internet, or pass a local folder"
        )
    return _Source(repo_id, None, repo_id, False)


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


# --------------------------------------------------------------------------------------------- traits


def _call_params(fn: Any) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def _default(params: dict[str, inspect.Parameter], name: str) -> Any:
    """A call parameter's default, or None when absent or without one."""
    param = params.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _prompt_tokenizer(pipe: Any) -> tuple[Any, int | None, bool]:
    """The tokenizer whose budget caps the prompt: (tokenizer, budget, whether it outreaches the others).

    Only tokenizers paired with a loaded text encoder count (SD3 can run without T5). When the pipeline takes
    `max_sequence_length`, the encoder with the largest capacity reads that many tokens by default.
    """
    found: list[tuple[str, Any, int | None]] = []
    for attr in ("tokenizer", "tokenizer_2", "tokenizer_3", "tokenizer_4"):
        tok = getattr(pipe, attr, None)
        encoder = getattr(pipe, attr.replace("tokenizer", "text_encoder"), None)
        if tok is None or encoder is None:
            continue
        limit = getattr(tok, "model_max_length", None)
        known = int(limit) if isinstance(limit, int) and 0 < limit < _UNSET_MAX_LENGTH else None
        found.append((attr, tok, known))
    if not found:
        return None, None, False
    # Unknown limits sort as unbounded: such a tokenizer is the long one.
    attr, tok, limit = max(found, key=lambda f: math.inf if f[2] is None else f[2])
    seq = _default(_call_params(pipe.__call__), "max_sequence_length")
    budget = limit
    if isinstance(seq, int) and seq > 0:
        budget = seq if limit is None else min(seq, limit)
    others = [f[2] for f in found if f[0] != attr and f[2] is not None]
    longer = budget is not None and bool(others) and budget > max(others)
    return tok, budget, longer


def prompt_style(tokenizer: Any) -> str:
    """`tags` when the prompt's budget-defining tokenizer is CLIP's (keywords work best), else `sentences`
    (a T5 or LLM text encoder reads plain language)."""
    if tokenizer is None:
        return "tags"
    return "tags" if "clip" in type(tokenizer).__name__.lower() else "sentences"


class _DropBenignTruncation(logging.Filter):
    """Drops truncation warnings about the short CLIP encoders while a longer one reads the whole prompt.

    Two messages: diffusers' "truncated because CLIP can only handle ..." and transformers' "Token indices
    sequence length is longer ... (n > 77)" from the pipeline tokenizing the prompt untruncated. A length
    warning about the budget-defining tokenizer itself is kept: then words really are lost.
    """

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith(_CLIP_TRUNCATION):
            return False
        match = _TOKEN_LENGTH.match(msg)
        return not (match and int(match.group(1)) < self.budget)


# --------------------------------------------------------------------------------------------- model


class DiffusersImageModel:
    """A loaded diffusers pipeline implementing the ImageModel protocol.

    Attributes: `name`, `traits`, `placement` (one human line), `device`, `dtype`, `pipe` (text-to-image),
    `img2img_pipe` (made once with `from_pipe`, sharing `pipe`'s weights; None without img2img).
    """

    def __init__(
        self,
        pipe: Any,
        *,
        name: str,
        placement: Placement | None = None,
        progress: bool = False,
    ) -> None:
        self.pipe = pipe
        self.name = name
        self._plan = placement or Placement("cpu", "float32", "none", "cpu (float32): placed by caller")
        self.placement = self._plan.reason
        self._progress = progress
        self._quiet_progress(pipe)
        self.img2img_pipe, strength = self._make_img2img()
        tok, budget, longer = _prompt_tokenizer(pipe)
        self._tokenizer = tok
        self._log_filter = _DropBenignTruncation(budget) if longer and budget else None
        self.traits = ImageTraits(
            prompt_budget=budget,
            negative_prompt="negative_prompt" in _call_params(pipe.__call__),
            img2img=self.img2img_pipe is not None,
            strength=strength,
            prompt_style=prompt_style(tok),
        )

    def call_defaults(self, *, img2img: bool = False) -> dict[str, Any]:
        """Steps and guidance the pipeline uses when a request leaves them empty (for provenance)."""
        pipe = self.img2img_pipe if img2img and self.img2img_pipe is not None else self.pipe
        params = _call_params(pipe.__call__)
        found = {"steps": _default(params, "num_inference_steps"), "guidance": _default(params, "guidance_scale")}
        return {k: v for k, v in found.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    @property
    def device(self) -> str:
        """Where the denoiser executes (with offload: the GPU that executes)."""
        return self._plan.device

    @property
    def dtype(self) -> str:
        """Weights' dtype name."""
        return self._plan.dtype

    def _quiet_progress(self, pipe: Any) -> None:
        # Inside a refinement loop a progress bar per call is noise; the loop reports progress itself.
        if not self._progress and hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)

    def _make_img2img(self) -> tuple[Any, bool]:
        """An img2img pipeline sharing `pipe`'s modules (no second copy), and whether it takes `strength`."""
        from diffusers import AutoPipelineForImage2Image

        try:
            i2i = AutoPipelineForImage2Image.from_pipe(self.pipe)
        except Exception as exc:  # no img2img twin is a capability answer, not a failure
            log.debug("no img2img twin for %s: %s", type(self.pipe).__name__, exc)
            # Unified pipelines (FLUX.2 Klein style) take the init image in the text-to-image call itself.
            params = _call_params(self.pipe.__call__)
            if "image" in params:
                return self.pipe, "strength" in params
            return None, False
        self._quiet_progress(i2i)
        return i2i, "strength" in _call_params(i2i.__call__)

    # ---- tokens

    def count_tokens(self, text: str) -> int:
        """Tokens the budget-defining tokenizer makes of `text`, its own special tokens included.

        Counted like the pipeline counts them (BOS/EOS included), so `count <= traits.prompt_budget` means
        nothing is cut. Without a tokenizer, whitespace words are the best estimate.
        """
        if self._tokenizer is None:
            return len(text.split())
        ids = self._tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return len(ids)

    def cut_words(self, text: str) -> list[str]:
        """The trailing words of `text` the model will not read (empty when it fits the budget)."""
        budget = self.traits.prompt_budget
        words = text.split()
        if budget is None or self.count_tokens(text) <= budget:
            return []
        # Largest prefix of whole words that fits: a word split at the boundary counts as cut.
        lo, hi = 0, len(words)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens(" ".join(words[:mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return words[lo:]

    def fit_report(self, text: str) -> str | None:
        """One line naming the words cut when `text` exceeds the prompt budget; None when it fits."""
        cut = self.cut_words(text)
        if not cut:
            return None
        shown = " ".join(cut)
        if len(shown) > 160:
            shown = shown[:157] + "..."
        return (
            f"prompt is {self.count_tokens(text)} tokens but {self.name} reads {self.traits.prompt_budget}: "
            f"the last {len(cut)} word(s) are cut: '{shown}'"
        )

    # ---- generation

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """One image per seed, in order, from one batched pipeline call."""
        if not request.seeds:
            return []
        with self._filtered_logs():
            try:
                return self._generate(request)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                if self._plan.offload != "none" or not self._plan.device.startswith("cuda"):
                    self._release_cuda_cache()
                    raise self._oom_error(request) from exc
            # Retry outside the except block: the failed call's frames, and the tensors they hold, are gone.
            self._release_cuda_cache()
            log.warning("out of GPU memory on %s; retrying once with model CPU offload", self._plan.device)
            self._fall_back_to_offload()
            try:
                return self._generate(request)
            except Exception as exc:
                if _is_oom(exc):
                    self._release_cuda_cache()
                    raise self._oom_error(request) from exc
                raise

    def _generate(self, request: ImageRequest) -> list[Image.Image]:
        import torch

        seeds = [int(s) for s in request.seeds]
        if request.init_image is None:
            pipe = self.pipe
            kwargs: dict[str, Any] = {}
        else:
            if self.img2img_pipe is None:
                raise ModelError(
                    f"{self.name} cannot start from an init image: run text-to-image or use an img2img model"
                )
            pipe = self.img2img_pipe
            kwargs = self._img2img_kwargs(request, pipe)
        params = _call_params(pipe.__call__)

        def put(key: str, value: Any) -> None:
            if value is not None and key in params:
                kwargs[key] = value

        put("prompt", request.prompt)
        if request.negative_prompt:
            put("negative_prompt", request.negative_prompt)
        put("width", request.width)
        put("height", request.height)
        put("num_inference_steps", request.steps)
        put("guidance_scale", request.guidance)
        put("num_images_per_prompt", len(seeds))
        put("output_type", "pil")
        # One generator per image: image k depends only on seeds[k], alone or in a batch.
        gen_device = "cpu" if self._plan.device == "mps" else self._plan.device
        kwargs["generator"] = [torch.Generator(gen_device).manual_seed(s) for s in seeds]
        out = pipe(**kwargs)
        images = list(out.images)
        if len(images) != len(seeds):
            got = len(images)
            raise ModelError(f"{self.name} returned {got} images for {len(seeds)} seeds; report this model")
        return images

    def _img2img_kwargs(self, request: ImageRequest, pipe: Any) -> dict[str, Any]:
        """The init image (RGB, resized to the target size) and a strength that runs at least one step."""
        params = _call_params(pipe.__call__)
        width, height = request.width, request.height
        if width is None or height is None:
            default_w, default_h = self.default_size()
            width = width or default_w
            height = height or default_h
        kwargs: dict[str, Any] = {"image": _load_init_image(request.init_image or "", width, height)}
        if not self.traits.strength or "strength" not in params:
            return kwargs
        strength = request.strength if request.strength is not None else _default(params, "strength")
        steps = request.steps if request.steps is not None else _default(params, "num_inference_steps")
        if strength is None:
            return kwargs
        strength = min(float(strength), 1.0)
        if isinstance(steps, int) and steps > 0 and int(steps * strength) < 1:
            # img2img denoises int(steps * strength) steps; zero steps crashes diffusers on an empty tensor.
            raised = 1.0 / steps
            while int(steps * raised) < 1:
                raised = math.nextafter(raised, 2.0)
            log.warning(
                "img2img strength %.3g with %d steps would denoise 0 steps; raised to %.3g so one step runs",
                strength,
                steps,
                raised,
            )
            strength = raised
        kwargs["strength"] = strength
        return kwargs

    def default_size(self) -> tuple[int | None, int | None]:
        """The pipeline's default (width, height) in pixels, or (None, None) when it has none."""
        scale = getattr(self.pipe, "vae_scale_factor", None)
        sample = getattr(self.pipe, "default_sample_size", None)
        if sample is None:
            for attr in ("unet", "transformer"):
                module = getattr(self.pipe, attr, None)
                if module is not None:
                    sample = getattr(module.config, "sample_size", None)
                    break
        if isinstance(sample, (tuple, list)):
            sample = sample[0]
        if not isinstance(sample, int) or not isinstance(scale, int):
            return None, None
        return sample * scale, sample * scale

    @contextlib.contextmanager
    def _filtered_logs(self) -> Iterator[None]:
        """Install this model's log filter on the loggers its pipelines write to, for one call only.

        Only for the duration of the call, so another model of the same pipeline class (say SD3 without T5,
        where the CLIP cut is real) still shows the warning.
        """
        if self._log_filter is None:
            yield
            return
        names = {type(self.pipe).__module__, _TOKENIZER_LOGGER}
        if self.img2img_pipe is not None:
            names.add(type(self.img2img_pipe).__module__)
        loggers = [logging.getLogger(n) for n in sorted(names)]
        for lg in loggers:
            lg.addFilter(self._log_filter)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(self._log_filter)

    def _fall_back_to_offload(self) -> None:
        """Switch a pinned CUDA pipeline to model CPU offload and rebuild its img2img twin on top."""
        index = int(self._plan.device.split(":", 1)[1]) if ":" in self._plan.device else 0
        self.pipe.enable_model_cpu_offload(gpu_id=index)
        if self.img2img_pipe is not None and self.img2img_pipe is not self.pipe:
            self.img2img_pipe, _ = self._make_img2img()
        short = _DTYPE_SHORT.get(self._plan.dtype, self._plan.dtype)
        reason = f"{self._plan.device} ({short}, model CPU offload): ran out of memory pinned, offloading"
        self._plan = replace(self._plan, offload="model", reason=reason)
        self.placement = reason

    def _release_cuda_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _oom_error(self, request: ImageRequest) -> ModelError:
        size = f"{request.width or 'default'}x{request.height or 'default'}"
        return ModelError(
            f"{self.name} ran out of memory on {self._plan.device} making {len(request.seeds)} image(s) at "
            f"{size}: use a smaller size or fewer images, --device cpu, or a smaller model"
        )


def _is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an MPS/CUDA RuntimeError saying the same."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _load_init_image(path: str, width: int | None, height: int | None) -> Image.Image:
    """Open an init image as RGB at the target size (kept as is when the model has no default)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise ModelError(f"cannot read init image '{path}' ({exc}); pass a PNG or JPEG file") from exc
    if width and height and rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return rgb


# --------------------------------------------------------------------------------------------- loading


def _pipeline_kwargs(index: dict[str, Any] | None) -> dict[str, Any]:
    """`safety_checker=None` and friends, only for pipelines whose constructor takes them (SD1.x)."""
    if not index:
        return {}
    import diffusers

    cls = getattr(diffusers, str(index.get("_class_name", "")), None)
    params = _call_params(cls.__init__) if cls is not None else {}
    takes = "safety_checker" in params if params else "safety_checker" in index
    if not takes:
        return {}
    kwargs: dict[str, Any] = {"safety_checker": None}
    if "requires_safety_checker" in params or not params:
        kwargs["requires_safety_checker"] = False
    return kwargs


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remote_index(repo_id: str) -> dict[str, Any] | None:
    """model_index.json of a hub repo about to be downloaded (a few kB), or None when unavailable."""
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(repo_id, cache_dir=_hub_cache_dir()))
    except Exception:  # only decides optional kwargs; the load itself reports real errors
        return None


class _DropTorchvisionFallback(logging.Filter):
    """transformers warns, for every image processor it falls back on, that torchvision is missing; the
    PIL processors it falls back to are what diffusers pipelines used all along, so the lines are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def _quiet_torchvision_fallback() -> None:
    target = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionFallback) for f in target.filters):
        target.addFilter(_DropTorchvisionFallback())


def load_diffusers(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    name: str | None = None,
    progress: bool = False,
    loras: Sequence[str] = (),
) -> DiffusersImageModel:
    """Load a diffusers pipeline from a hub id (`org/name`, `hf:` optional) or a local folder.

    `device` (`cpu`, `cuda`, `cuda:N`, `mps`) and `dtype` (`bf16`, `fp16`, `fp32`) override the automatic
    placement; `loras` (`PATH_OR_ID[:SCALE]`) are loaded into it through diffusers' LoRA loader. Every
    failure a user can fix raises a one-line ModelError.
    """
    source = _resolve(spec)
    shown = name or (f"hf:{source.repo_id}" if source.repo_id else spec.strip())
    index = _read_index(source.folder, shown) if source.folder else _remote_index(source.target)
    components = _component_names(index) if index else None
    total, largest = weight_bytes(source.folder, components) if source.folder else (0, 0)
    plan = _plan(device, dtype, total, largest or None)
    # Every LoRA is found (or refused) before the pipeline's slow load, not after it.
    sources = [(spec, *_lora_source_of(spec)) for spec in loras]

    _quiet_torchvision_fallback()
    import torch
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    kwargs: dict[str, Any] = {"dtype": getattr(torch, plan.dtype), **_pipeline_kwargs(index)}
    if source.local_only:
        kwargs["local_files_only"] = True
    else:
        # The cache as the environment names it now (huggingface_hub fixed its default at import).
        kwargs["cache_dir"] = _hub_cache_dir()
    try:
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(source.target, **kwargs)
        except ValueError as exc:
            # AutoPipeline only knows text-to-image families it maps; anything else loads generically.
            if "AutoPipeline" not in str(exc):
                raise
            pipe = DiffusionPipeline.from_pretrained(source.target, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        where = f"folder '{source.target}'" if source.repo_id is None else f"hf model '{source.repo_id}'"
        if isinstance(exc, KeyError):  # model_index.json without the keys every pipeline folder has
            raise ModelError(
                f"cannot load the diffusers pipeline from {where}: its model_index.json lacks {exc}; "
                "point --image-model at a folder written by save_pretrained"
            ) from exc
        raise ModelError(f"cannot load the diffusers pipeline from {where}: {_one_line(exc)}") from exc

    if source.folder is None and source.repo_id:
        # Downloaded just now: size it from the snapshot, and re-plan, since the first plan knew no size.
        snapshot = _cached_snapshot(source.repo_id)
        if snapshot is not None:
            total, largest = weight_bytes(snapshot, components)
            plan = _plan(device, dtype, total, largest or None)
    # Before placement: the adapters then move (or offload) with the weights they patch.
    _load_loras(pipe, sources, shown)
    _apply(pipe, plan)
    model = DiffusersImageModel(pipe, name=shown, placement=plan, progress=progress)
    log.info("%s on %s", shown, model.placement)
    return model


def _apply(pipe: Any, plan: Placement) -> None:
    """Move the pipeline where the plan says, or install the offload hooks it chose."""
    gpu = int(plan.device.split(":", 1)[1]) if plan.device.startswith("cuda:") else 0
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(gpu_id=gpu)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(gpu_id=gpu)
    elif plan.device != "cpu":
        pipe.to(plan.device)


# --------------------------------------------------------------------------------------------- LoRAs


def _lora_source_of(spec: str) -> tuple[str, float, str, dict[str, Any]]:
    """`PATH_OR_ID[:SCALE]` as (source, scale, what load_lora_weights gets, its keyword arguments)."""
    from refineloop.settings import lora_scale

    source, scale = lora_scale(spec)
    if scale is None:
        raise ModelError(f"--lora '{spec}': the scale after ':' must be a number from -10 to 10")
    return (source, scale, *_lora_source(source))


def _load_loras(pipe: Any, loras: Sequence[tuple[str, str, float, str, dict[str, Any]]], shown: str) -> None:
    """Load each LoRA (as `_lora_source_of` found it) as a named adapter and activate them all at their scales."""
    if not loras:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelError(f"{shown} ({type(pipe).__name__}) has no LoRA loader in diffusers: drop --lora")
    names, scales = [], []
    for index, (_spec, source, scale, target, kwargs) in enumerate(loras):
        name = f"lora{index + 1}"
        try:
            pipe.load_lora_weights(target, adapter_name=name, **kwargs)
        except ModelError:
            raise
        except Exception as exc:
            if "PEFT backend is required" in str(exc):
                raise ModelError("LoRAs need the peft package: pip install peft, then run again") from exc
            raise ModelError(
                f"cannot load LoRA '{source}' into {shown} ({_one_line(exc, 160)}): check that it was trained for "
                "this model family and is a diffusers or kohya .safetensors LoRA"
            ) from exc
        names.append(name)
        scales.append(scale)
    pipe.set_adapters(names, adapter_weights=scales)
    log.info("%s: LoRAs %s", shown, ", ".join(f"{lora[1]}={lora[2]:g}" for lora in loras))


def _lora_source(source: str) -> tuple[str, dict[str, Any]]:
    """What `load_lora_weights` gets for a LoRA file, folder or hub id, failing fast offline."""
    raw = source.removeprefix("hf:")
    path = Path(raw).expanduser()
    if path.is_file():
        return str(path.parent), {"weight_name": path.name, "local_files_only": True}
    if path.is_dir():
        return str(path), {"local_files_only": True}
    parts = raw.split("/")
    looks_like_id = len(parts) >= 2 and not raw.startswith((".", "/", "~")) and "\\" not in raw
    if not looks_like_id or (len(parts) > 2 and not raw.endswith(".safetensors")):
        raise ModelError(f"LoRA '{source}' not found: pass a .safetensors file, a folder, or a hub id (org/name)")
    repo_id = "/".join(parts[:2])
    kwargs: dict[str, Any] = {"weight_name": "/".join(parts[2:])} if len(parts) > 2 else {}
    snapshot = _cached_snapshot(repo_id)
    if snapshot is not None:
        return str(snapshot), {**kwargs, "local_files_only": True}
    if _hub_offline() or not _hub_reachable():
        raise ModelError(
            f"LoRA '{repo_id}' is not in the local Hugging Face cache and the hub cannot be reached: "
            f"run `hf download {repo_id}` on a machine with internet, or pass a local file"
        )
    return repo_id, {**kwargs, "cache_dir": _hub_cache_dir()}
