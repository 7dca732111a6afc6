"""`DiffusersImageModel`: a loaded diffusers pipeline behind the ImageModel protocol.

It reads its traits from the pipeline, counts prompt tokens with the pipeline's own tokenizer, and draws
images: one request per pipeline call (`generate`, which falls back to CPU offload once on running out of GPU
memory), or several requests that share a batch in one call (`generate_many`). Every image has its own seeded
generator, so image k depends only on its seed, alone or in a batch. torch and diffusers are imported inside
the methods.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from refineloop.backends.image.diffusers.log_filters import TOKENIZER_LOGGER, DropBenignTruncation, filtered
from refineloop.backends.image.diffusers.placement import Placement, short_dtype
from refineloop.backends.image.diffusers.schedulers import build_scheduler, sampler_words
from refineloop.backends.image.diffusers.traits import call_params, param_default, prompt_style, prompt_tokenizer
from refineloop.backends.image.protocol import ImageRequest, ImageTraits, check_one_batch
from refineloop.errors import ModelError
from refineloop.progress_events import DenoiseSteps, listening

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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
        self.weights_path: str | None = None
        """The folder (or file) holding the weights, for the model hash in the images' metadata."""
        self.lora_files: list[tuple[str, float, str | None]] = []
        """Each LoRA as (how it was named, scale, its weight file when found locally), for the LoRA hashes."""
        self._quiet_progress(pipe)
        self._own_scheduler = getattr(pipe, "scheduler", None)
        self._schedulers: dict[str, Any] = {}
        self.img2img_pipe, strength = self._make_img2img()
        tok, budget, longer = prompt_tokenizer(pipe)
        # A fast tokenizer must not be used by two threads at once ("Already borrowed"): counting tokens gets
        # its own copy, so it may run while a pipeline call tokenizes in another thread.
        self._counting_tokenizer = copy.deepcopy(tok)
        self._counting_lock = threading.Lock()
        self._log_filter = DropBenignTruncation(budget) if longer and budget else None
        self.traits = ImageTraits(
            prompt_budget=budget,
            negative_prompt="negative_prompt" in call_params(pipe.__call__),
            img2img=self.img2img_pipe is not None,
            strength=strength,
            prompt_style=prompt_style(tok),
        )

    def call_defaults(self, *, img2img: bool = False) -> dict[str, Any]:
        """Steps and guidance the pipeline uses when a request leaves them empty (for provenance)."""
        pipe = self.img2img_pipe if img2img and self.img2img_pipe is not None else self.pipe
        params = call_params(pipe.__call__)
        found = {
            "steps": param_default(params, "num_inference_steps"),
            "guidance": param_default(params, "guidance_scale"),
        }
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
            params = call_params(self.pipe.__call__)
            if "image" in params:
                return self.pipe, "strength" in params
            return None, False
        self._quiet_progress(i2i)
        return i2i, "strength" in call_params(i2i.__call__)

    # ---- tokens

    def count_tokens(self, text: str) -> int:
        """Tokens the budget-defining tokenizer makes of `text`, its own special tokens included.

        Counted like the pipeline counts them (BOS/EOS included), so `count <= traits.prompt_budget` means
        nothing is cut. Without a tokenizer, whitespace words are the best estimate. Safe from any thread.
        """
        if self._counting_tokenizer is None:
            return len(text.split())
        with self._counting_lock:
            ids = self._counting_tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)
        return len(ids["input_ids"])

    # ---- generation

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """One image per seed, in order, from one batched pipeline call.

        Out of GPU memory while pinned to a GPU, the pipeline switches to model CPU offload for good and the
        call is retried once; a second failure is a one-line ModelError.
        """
        if not request.seeds:
            return []
        with self._filtered_logs():
            try:
                return self._draw([request])[0]
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                if self._plan.offload != "none" or not self._plan.device.startswith("cuda"):
                    self._release_cuda_cache()
                    raise self._oom_error([request]) from exc
            # Retry outside the except block: the failed call's frames, and the tensors they hold, are gone.
            self._release_cuda_cache()
            log.warning("out of GPU memory on %s; retrying once with model CPU offload", self._plan.device)
            self._fall_back_to_offload()
            return self._explain_oom([request], lambda: self._draw([request])[0])

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """Each request's images (one per seed, in order), every image of them in one pipeline call.

        The requests must share one `batch_key()` (a ValueError otherwise). Out of GPU memory this raises a
        one-line ModelError without switching to offload: a caller can still serve the requests one by one
        through `generate`, which takes that fallback.
        """
        check_one_batch(requests)
        if not any(request.seeds for request in requests):
            return [[] for _ in requests]
        with self._filtered_logs():
            return self._explain_oom(requests, lambda: self._draw(requests))

    def _explain_oom(self, requests: Sequence[ImageRequest], call: Callable[[], _T]) -> _T:
        """`call()`, its out-of-memory failure turned into a one-line ModelError (after freeing the cache)."""
        try:
            return call()
        except Exception as exc:
            if _is_oom(exc):
                self._release_cuda_cache()
                raise self._oom_error(requests) from exc
            raise

    def _draw(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """One pipeline call for every image of `requests` (one batch key), split back per request."""
        import torch

        pipe = self._pipe_for(requests[0])
        wanted = self._scheduler(requests[0].scheduler)
        if wanted is not None and getattr(pipe, "scheduler", None) is not wanted:
            pipe.scheduler = wanted
        kwargs = self._call_kwargs(requests, pipe)
        seeds = [int(seed) for request in requests for seed in request.seeds]
        # One generator per image: image k depends only on seeds[k], alone or in a batch.
        gen_device = "cpu" if self._plan.device == "mps" else self._plan.device
        kwargs["generator"] = [torch.Generator(gen_device).manual_seed(s) for s in seeds]
        steps = self._step_reporter(pipe, kwargs)
        try:
            images = list(pipe(**kwargs).images)
        finally:
            if steps is not None:
                steps.end()
        if len(images) != len(seeds):
            got = len(images)
            raise ModelError(f"{self.name} returned {got} images for {len(seeds)} seeds; report this model")
        drawn: list[list[Image.Image]] = []
        for request in requests:
            drawn.append(images[: len(request.seeds)])
            images = images[len(request.seeds) :]
        return drawn

    def _step_reporter(self, pipe: Any, kwargs: dict[str, Any]) -> DenoiseSteps | None:
        """Report each denoising step through refineloop.progress_events, where someone listens and the pipeline
        takes a step callback (`callback_on_step_end`); None otherwise."""
        if not listening() or "callback_on_step_end" not in call_params(pipe.__call__):
            return None
        planned = kwargs.get("num_inference_steps") or param_default(call_params(pipe.__call__), "num_inference_steps")
        steps = DenoiseSteps(planned if isinstance(planned, int) else None)

        def on_step_end(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            steps.step(index + 1, planned_steps(pipeline, None))
            return tensors

        kwargs["callback_on_step_end"] = on_step_end
        return steps

    def check_scheduler(self, name: str) -> None:
        """Refuse (one line) a `--scheduler` this pipeline cannot take, before any image is drawn."""
        if name:
            self._scheduler(name)

    def sampler_words(self, name: str) -> tuple[str, str]:
        """A1111's (`Sampler`, `Schedule type`) words for the images drawn with `--scheduler name` ("" keeps the
        model's own scheduler), for their metadata."""
        return sampler_words(self._scheduler(name))

    def _scheduler(self, name: str) -> Any:
        """The model's own scheduler ("" ), or sampler `name` built once from its config."""
        if not name:
            return self._own_scheduler
        if self._own_scheduler is None:
            raise ModelError(f"--scheduler {name}: {self.name} has no scheduler to replace: drop --scheduler")
        if name not in self._schedulers:
            self._schedulers[name] = build_scheduler(self._own_scheduler, name, self.name)
        return self._schedulers[name]

    def _call_kwargs(self, requests: Sequence[ImageRequest], pipe: Any) -> dict[str, Any]:
        """The pipeline call's arguments but the generators, given only where the pipeline takes them."""
        first = requests[0]
        params = call_params(pipe.__call__)
        kwargs: dict[str, Any] = {}

        def put(key: str, value: Any) -> None:
            if value is not None and key in params:
                kwargs[key] = value

        if first.init_image is not None:
            kwargs.update(self._img2img_kwargs(first, pipe))
            if len(requests) > 1:
                kwargs["image"] = [self._init_image(r) for r in requests for _ in r.seeds]
        if len(requests) == 1:
            put("prompt", first.prompt)
            if first.negative_prompt:
                put("negative_prompt", first.negative_prompt)
            put("num_images_per_prompt", len(first.seeds))
        else:
            # A prompt and negative prompt per image; an empty negative prompt is what the pipeline uses when
            # none is given, so mixing requests with and without one is exact.
            put("prompt", [r.prompt for r in requests for _ in r.seeds])
            negatives = [r.negative_prompt for r in requests for _ in r.seeds]
            if any(negatives):
                put("negative_prompt", negatives)
            put("num_images_per_prompt", 1)
        put("width", first.width)
        put("height", first.height)
        put("num_inference_steps", first.steps)
        put("guidance_scale", first.guidance)
        put("output_type", "pil")
        return kwargs

    def _pipe_for(self, request: ImageRequest) -> Any:
        """The text-to-image pipeline, or the img2img one when the request starts from an init image."""
        if request.init_image is None:
            return self.pipe
        if self.img2img_pipe is None:
            raise ModelError(f"{self.name} cannot start from an init image: run text-to-image or use an img2img model")
        return self.img2img_pipe

    def _init_image(self, request: ImageRequest) -> Image.Image:
        """The request's init image as RGB at its target size (the pipeline's default size where it sets none)."""
        width, height = request.width, request.height
        if width is None or height is None:
            default_w, default_h = self.default_size()
            width = width or default_w
            height = height or default_h
        return _load_init_image(request.init_image or "", width, height)

    def _img2img_kwargs(self, request: ImageRequest, pipe: Any) -> dict[str, Any]:
        """The init image (RGB, resized to the target size) and a strength that runs at least one step."""
        params = call_params(pipe.__call__)
        kwargs: dict[str, Any] = {"image": self._init_image(request)}
        if not self.traits.strength or "strength" not in params:
            return kwargs
        strength = request.strength if request.strength is not None else param_default(params, "strength")
        steps = request.steps if request.steps is not None else param_default(params, "num_inference_steps")
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

    def _filtered_logs(self) -> contextlib.AbstractContextManager[None]:
        """This model's log filter on the loggers its pipelines write to, for one call only."""
        names = {type(self.pipe).__module__, TOKENIZER_LOGGER}
        if self.img2img_pipe is not None:
            names.add(type(self.img2img_pipe).__module__)
        return filtered(names, self._log_filter)

    def _fall_back_to_offload(self) -> None:
        """Switch a pinned CUDA pipeline to model CPU offload and rebuild its img2img twin on top."""
        index = int(self._plan.device.split(":", 1)[1]) if ":" in self._plan.device else 0
        self.pipe.enable_model_cpu_offload(gpu_id=index)
        if self.img2img_pipe is not None and self.img2img_pipe is not self.pipe:
            self.img2img_pipe, _ = self._make_img2img()
        short = short_dtype(self._plan.dtype)
        reason = f"{self._plan.device} ({short}, model CPU offload): ran out of memory pinned, offloading"
        self._plan = replace(self._plan, offload="model", reason=reason)
        self.placement = reason

    def _release_cuda_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _oom_error(self, requests: Sequence[ImageRequest]) -> ModelError:
        first = requests[0]
        size = f"{first.width or 'default'}x{first.height or 'default'}"
        count = sum(len(request.seeds) for request in requests)
        return ModelError(
            f"{self.name} ran out of memory on {self._plan.device} making {count} image(s) at "
            f"{size}: use a smaller size or fewer images, --device cpu, or a smaller model"
        )


def planned_steps(pipe: Any, fallback: int | None = 0) -> int | None:
    """How many denoising steps the pipeline's current call takes (its `num_timesteps`), else `fallback`."""
    value = getattr(pipe, "num_timesteps", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


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
