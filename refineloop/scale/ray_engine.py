"""The Ray engine: a batched Serve generator per GPU, runner actors hosting many runs as threads, a driver.

- **Generator** (`Generator`, a Serve deployment, one replica per GPU): loads the image model once (its
  img2img twin comes from `from_pipe`, sharing the weights). `@serve.batch` gathers the `generate` calls of
  concurrent runs; each batch is split into groups that one pipeline call can serve (same mode, size, steps,
  guidance and strength) and every image keeps its own seeded generator. Only the batch handler touches the
  pipeline, one batch at a time (`max_concurrent_batches=1`): diffusers pipelines are not thread-safe.
- **Runner actors** (`Runner`): each hosts up to `runs_per_runner` runs as threads over one store: Postgres
  on a cluster, or, on a Ray of this machine alone, the batch folder (SQLite per run, file locks).
  Nodes reach the generator through `RemoteImageModel`, an ImageModel whose `generate` is a Serve call,
  handed to them in the run config's model cache: node code is the same as on one machine. A runner that
  dies is restarted by Ray and its in-flight runs are retried; each resumes from its last checkpoint.
- **Driver** (`run_ray`): registers the batch in the store (the Postgres runs table, or the batch folder),
  keeps a bounded number of runs in flight, resubmits runs that come back busy (a dying process still held
  their lock) and writes the summary. It holds the batch's lock, so two drivers never run one batch.

Ray is imported at module level: callers import this module only after checking that the `ray` extra is
installed (`refineloop.cli.batch` does).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

import ray
from ray import serve

from refineloop.apps.batch import (
    BatchItem,
    BatchPlan,
    ItemResult,
    SummaryRow,
    run_item,
    summarize,
    write_summary,
)
from refineloop.backends.image.protocol import ImageRequest, ImageTraits
from refineloop.backends.model_cache import ModelCache
from refineloop.errors import ModelError, RefineError, SettingsError
from refineloop.scale import ScaleError, check_storage
from refineloop.settings import RunSettings

if TYPE_CHECKING:
    from PIL import Image
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)

APP = "refineloop"
DEPLOYMENT = "generator"

# Failures that mean "the replica went away", after which Serve starts a new one: the call is retried.
# Generation is deterministic per seed, so a retried call makes the same image.
_REPLICA_GONE = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
    serve.exceptions.DeploymentUnavailableError,
    serve.exceptions.BackPressureError,
)
_GENERATE_RETRY_S = 600.0
"""How long a generate call keeps retrying while the generator is restarted (a model reload included)."""


# --------------------------------------------------------------------------------------------- options


@dataclass
class EngineOptions:
    """How the Ray engine is laid out."""

    address: str = ""
    """Ray cluster to join (`host:6379`, `auto`, `ray://host:10001`); empty starts a local Ray."""
    replicas: int = 0
    """Generator replicas; 0 gives one per GPU in the cluster (one on a cluster without GPUs)."""
    runners: int = 2
    """Runner actors (processes); each hosts `runs_per_runner` runs as threads."""
    runs_per_runner: int = 16
    """Concurrent runs per runner."""
    max_batch_size: int = 8
    """Most images in one pipeline call."""
    batch_wait_s: float = 0.05
    """How long the generator waits for a batch to fill once its first request arrived."""
    replica_cpus: float = 1.0
    """CPUs reserved per generator replica when the cluster has no GPU."""
    busy_timeout_s: float = 120.0
    """How long a run may stay locked by another process before the driver gives up on it."""
    local_cpus: int = 0
    """CPUs of a local Ray started by the driver; 0 takes the machine's count."""

    def check(self) -> EngineOptions:
        """Refuse nonsense in one line."""
        for name in ("runners", "runs_per_runner", "max_batch_size"):
            if getattr(self, name) < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be at least 1")
        if self.replicas < 0 or self.batch_wait_s < 0 or self.replica_cpus < 0:
            raise SettingsError("--replicas, --batch-wait and --replica-cpus must not be negative")
        return self


# --------------------------------------------------------------------------------------------- connect


def _probe(address: str) -> None:
    """Fail fast when a cluster address does not answer: ray.init itself retries for minutes."""
    target = address.removeprefix("ray://")
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit():
        raise ScaleError(f"--address takes host:port (or auto, or ray://host:port), got '{address}'")
    try:
        with socket.create_connection((host, int(port_text)), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ScaleError(
            f"cannot reach the Ray cluster at {address} ({reason}): start it with `ray start --head`, or fix --address"
        ) from None


def connect(options: EngineOptions) -> bool:
    """Join the cluster (or start a local Ray); True when this call started or joined it (and should leave)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # studios run offline; never phone home by default
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if options.address and options.address != "auto":
        _probe(options.address)
    try:
        if options.address:
            ray.init(address=options.address, **quiet)
        else:
            # A Ray of our own serves this machine only: keep it on loopback (Ray otherwise advertises, and its
            # processes dial, the machine's network address).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            cpus = options.local_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScaleError(f"cannot join the Ray cluster ({first}): start it with `ray start --head`") from None
    return True


# --------------------------------------------------------------------------------------------- generator


def _group_key(request: ImageRequest) -> tuple[Any, ...]:
    """Requests one pipeline call can serve together share all of these."""
    mode = "txt2img" if request.init_image is None else "img2img"
    return (mode, request.width, request.height, request.steps, request.guidance, request.strength)


def _images_in(requests: list[ImageRequest]) -> int:
    """A batch's size in images, not requests: a best-of-N request brings N images to the pipeline call."""
    return sum(len(request.seeds) for request in requests)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Level 1: PNG stays lossless (the critic sees exactly what the replica made) at a fraction of the time.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Generator:
    """The image model behind a batching queue; one Serve replica per GPU.

    Replies are ("ok", [png, ...]) or ("error", kind, message), so one bad request fails alone and the
    others of its batch still get their images.
    """

    def __init__(self, spec: str, device: str, dtype: str, max_batch_size: int, batch_wait_s: float) -> None:
        from refineloop.backends.model_cache import load_image_model

        self.config = {
            "spec": spec,
            "device": device,
            "dtype": dtype,
            "max_batch_size": max_batch_size,
            "batch_wait_s": batch_wait_s,
        }
        self.model = load_image_model(spec, device, dtype)
        # Counting tokens runs on the event loop while a pipeline call runs in a worker thread; a fast tokenizer
        # must not be used by two threads at once ("Already borrowed"), so counting gets its own copy.
        self._counter = copy.copy(self.model)
        if getattr(self.model, "_tokenizer", None) is not None:
            self._counter._tokenizer = copy.deepcopy(self.model._tokenizer)
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_s)
        self.stats_counts = {"requests": 0, "images": 0, "pipeline_calls": 0, "batches": 0}
        self.batch_sizes: list[int] = []

    def describe(self) -> dict[str, Any]:
        """Name, traits, placement and the configuration the replica was built with."""
        return {
            "name": self.model.name,
            "traits": asdict(self.model.traits),
            "placement": getattr(self.model, "placement", ""),
            "config": self.config,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def stats(self) -> dict[str, Any]:
        """Counters since the replica started: requests, images, pipeline calls, batches and their sizes (images)."""
        return {**self.stats_counts, "batch_sizes": list(self.batch_sizes), "pid": os.getpid()}

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the model's own tokenizer counts them."""
        return int(self._counter.count_tokens(text))

    async def generate(self, request: ImageRequest) -> tuple[Any, ...]:
        """One request's images, made together with whatever other requests are waiting."""
        most = self.config["max_batch_size"]
        if len(request.seeds) <= most:
            return await self._batched(request)
        # More images than one call may hold (the batcher would refuse it): queue it in parts, still through
        # the batcher, so the pipeline keeps its single consumer.
        parts = [replace(request, seeds=request.seeds[i : i + most]) for i in range(0, len(request.seeds), most)]
        replies = await asyncio.gather(*(self._batched(part) for part in parts))
        failed = next((reply for reply in replies if reply[0] != "ok"), None)
        return failed or ("ok", [png for reply in replies for png in reply[1]])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, batch_size_fn=_images_in)
    async def _batched(self, requests: list[ImageRequest]) -> list[tuple[Any, ...]]:
        self.stats_counts["batches"] += 1
        self.stats_counts["requests"] += len(requests)
        self.batch_sizes.append(_images_in(requests))
        # The blocking pipeline call runs off the event loop, so Serve keeps accepting (and queueing) requests.
        return await asyncio.to_thread(self._serve_batch, requests)

    def _serve_batch(self, requests: list[ImageRequest]) -> list[tuple[Any, ...]]:
        groups: dict[tuple[Any, ...], list[int]] = collections.defaultdict(list)
        for position, request in enumerate(requests):
            groups[_group_key(request)].append(position)
        replies: list[tuple[Any, ...]] = [("error", "ModelError", "not served")] * len(requests)
        for positions in groups.values():
            members = [requests[p] for p in positions]
            for position, reply in zip(positions, self._serve_group(members), strict=True):
                replies[position] = reply
        return replies

    def _serve_group(self, members: list[ImageRequest]) -> list[tuple[Any, ...]]:
        """One pipeline call for the group; on failure each request alone, so only the bad one fails."""
        if len(members) > 1 and getattr(self.model, "pipe", None) is not None:
            try:
                images = self._merged_call(members)
                self.stats_counts["pipeline_calls"] += 1
                self.stats_counts["images"] += sum(len(m.seeds) for m in members)
                replies = []
                start = 0
                for member in members:
                    mine = images[start : start + len(member.seeds)]
                    start += len(member.seeds)
                    replies.append(("ok", [_png(image) for image in mine]))
                return replies
            except Exception as exc:  # any failure: fall back to single calls, which report it
                log.warning("merged call of %d requests failed (%s); serving them one by one", len(members), exc)
        return [self._single(member) for member in members]

    def _single(self, request: ImageRequest) -> tuple[Any, ...]:
        try:
            images = self.model.generate(request)
        except RefineError as exc:
            return ("error", type(exc).__name__, str(exc))
        except Exception as exc:  # reported to the run as one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return ("error", type(exc).__name__, f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
        self.stats_counts["pipeline_calls"] += 1
        self.stats_counts["images"] += len(images)
        return ("ok", [_png(image) for image in images])

    def _merged_call(self, members: list[ImageRequest]) -> list[Image.Image]:
        """Every image of the group in one diffusers call: a prompt, negative prompt and generator per image."""
        import torch

        from refineloop.backends.image.diffusers_model import _call_params

        model = self.model
        first = members[0]
        prompts, negatives, seeds, inits = [], [], [], []
        for member in members:
            for seed in member.seeds:
                prompts.append(member.prompt)
                negatives.append(member.negative_prompt)
                seeds.append(int(seed))
                inits.append(member)
        if first.init_image is None:
            pipe = model.pipe
            kwargs: dict[str, Any] = {}
        else:
            pipe = model.img2img_pipe
            # The same init-image loading and strength clamping as a single call, per image of the group.
            per_image = [model._img2img_kwargs(member, pipe) for member in inits]
            kwargs = dict(per_image[0])
            kwargs["image"] = [entry["image"] for entry in per_image]
        params = _call_params(pipe.__call__)

        def put(key: str, value: Any) -> None:
            if value is not None and key in params:
                kwargs[key] = value

        put("prompt", prompts)
        if any(negatives):
            # An empty negative prompt is what the pipeline uses when none is given, so mixing is exact.
            put("negative_prompt", negatives)
        put("width", first.width)
        put("height", first.height)
        put("num_inference_steps", first.steps)
        put("guidance_scale", first.guidance)
        put("num_images_per_prompt", 1)
        put("output_type", "pil")
        device = "cpu" if model.device == "mps" else model.device
        kwargs["generator"] = [torch.Generator(device).manual_seed(seed) for seed in seeds]
        with model._filtered_logs():
            images = list(pipe(**kwargs).images)
        if len(images) != len(seeds):
            raise ModelError(f"{model.name} returned {len(images)} images for {len(seeds)} seeds")
        return images


# --------------------------------------------------------------------------------------------- remote model


class RemoteImageModel:
    """The ImageModel protocol over a Serve handle: what nodes see inside a runner actor."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle
        info = self._call("describe")
        self.name: str = info["name"]
        self.spec: str = info["config"]["spec"]
        self.traits = ImageTraits(**info["traits"])
        self.placement = f"{info['placement']} (Ray Serve generator)"
        self._tokens: dict[str, int] = {}
        self._tokens_lock = threading.Lock()

    def _call(self, method: str, *args: Any) -> Any:
        """A handle call that survives a replica restart: retried (with backoff) until one answers."""
        deadline = time.monotonic() + _GENERATE_RETRY_S
        pause = 0.2
        while True:
            try:
                return getattr(self.handle, method).remote(*args).result(timeout_s=_GENERATE_RETRY_S)
            except _REPLICA_GONE as exc:
                if time.monotonic() > deadline:
                    raise ModelError(f"the image generator did not come back within {_GENERATE_RETRY_S:.0f}s") from exc
                log.warning("generator replica unavailable (%s); retrying in %.1fs", type(exc).__name__, pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """One image per seed, made by the generator (batched with other runs' requests)."""
        from PIL import Image

        reply = self._call("generate", request)
        if reply[0] != "ok":
            raise ModelError(reply[2])
        images = []
        for data in reply[1]:
            image = Image.open(io.BytesIO(data))
            image.load()
            images.append(image)
        return images

    def count_tokens(self, text: str) -> int:
        """The generator's token count, remembered: the summarizer asks again for the same texts."""
        with self._tokens_lock:
            if text in self._tokens:
                return self._tokens[text]
        count = int(self._call("count_tokens", text))
        with self._tokens_lock:
            if len(self._tokens) > 4096:
                self._tokens.clear()
            self._tokens[text] = count
        return count


class RemoteModelCache(ModelCache):
    """A model cache whose image model is the remote generator; chat models load locally, once per runner."""

    def __init__(self, remote: RemoteImageModel) -> None:
        super().__init__()
        self.remote = remote

    def image_model(self, settings: RunSettings) -> RemoteImageModel:
        """The generator, whatever device or dtype the settings name (the replica decided those)."""
        if settings.image_model != self.remote.spec:
            raise ModelError(
                f"this batch's generator serves {self.remote.spec}, not {settings.image_model}: "
                "every item of a Ray batch uses one image model"
            )
        return self.remote


# --------------------------------------------------------------------------------------------- runners


class Runner:
    """Hosts many runs as threads: one store (a Postgres pool and lock session, or the batch folder) and one
    model cache per process."""

    def __init__(self, checkpointer: str, batch_dir: str, app: str = APP) -> None:
        import refineloop.graph  # noqa: F401 - load the graph and node code now, not inside the first run
        from refineloop.apps.batch import open_store

        self.store = open_store(checkpointer, batch_dir, pool_size=8, create_tables=False)
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=app)
        self.models = RemoteModelCache(RemoteImageModel(handle))

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Start, resume or skip one item; returns its ItemResult as a dict."""
        item = BatchItem.from_dict(job["item"])
        settings = RunSettings.from_dict(job["settings"])
        return run_item(item, settings, self.store, self.models).to_dict()

    def pid(self) -> int:
        """This process's id (tests kill it)."""
        return os.getpid()


def start_runners(checkpointer: str, batch_dir: str, options: EngineOptions) -> list[Any]:
    """The runner actors, restarted by Ray when they die, with their in-flight runs retried."""
    actor = ray.remote(Runner).options(
        max_restarts=-1,
        max_task_retries=3,
        max_concurrency=options.runs_per_runner,
        num_cpus=0,
        scheduling_strategy="SPREAD",
    )
    runners = [actor.remote(checkpointer, batch_dir) for _ in range(options.runners)]
    try:
        # Fail here, in one place, if a runner cannot start (no retries: they would only print the same traceback).
        ray.get([r.pid.options(max_task_retries=0).remote() for r in runners])
    except ray.exceptions.RayActorError as exc:
        raise ScaleError(f"a runner could not start on the cluster: {reason(exc)}") from None
    return runners


def reason(exc: BaseException) -> str:
    """The one line that says why a remote call failed: the last line of Ray's report, minus the class path.

    Ray wraps a remote exception's whole traceback into its message; the cause is its last line, which for
    refineloop's own errors is already a sentence meant for a person.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    head, sep, tail = last.partition(": ")
    if sep and head.replace(".", "").replace("_", "").isalnum() and "." in head:
        return tail
    return last


# --------------------------------------------------------------------------------------------- deploy


def _cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def deploy_generator(settings: RunSettings, options: EngineOptions) -> tuple[DeploymentHandle, dict[str, Any]]:
    """Deploy (or reuse, when already running with the same configuration) the generator; returns its handle
    and its description."""
    gpus = _cluster_gpus()
    replicas = options.replicas or max(1, gpus)
    config = {
        "spec": settings.image_model,
        "device": settings.device,
        "dtype": settings.dtype,
        "max_batch_size": options.max_batch_size,
        "batch_wait_s": options.batch_wait_s,
    }
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING", "enable_access_log": False})
    status = serve.status().applications.get(APP)
    if status is not None and status.status == "RUNNING":
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
        try:
            info = handle.describe.remote().result(timeout_s=30)
            running = status.deployments.get(DEPLOYMENT)
            count = running.replica_states.get("RUNNING", 0) if running is not None else 0
            if info["config"] == config and count == replicas:
                return handle, info
        except Exception:  # anything odd about the old app: deploy afresh below
            pass
    actor_options: dict[str, Any] = {"num_gpus": 1} if gpus else {"num_cpus": options.replica_cpus}
    deployment = serve.deployment(Generator).options(
        name=DEPLOYMENT,
        num_replicas=replicas,
        ray_actor_options=actor_options,
        # Room for every waiting run plus small calls (describe, count_tokens) beside a full batch.
        max_ongoing_requests=max(4 * options.max_batch_size, 32),
        health_check_period_s=2,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=5,
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    app = deployment.bind(
        settings.image_model, settings.device, settings.dtype, options.max_batch_size, options.batch_wait_s
    )
    try:
        handle = serve.run(app, name=APP, route_prefix=None)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the image generator did not start: {first}") from None
    return handle, handle.describe.remote().result(timeout_s=60)


# --------------------------------------------------------------------------------------------- driver


def _one_image_model(plan: BatchPlan) -> RunSettings:
    """The settings the generator is built from; every item must agree on the image model."""
    first = plan.settings_for(plan.items[0])
    for item in plan.items[1:]:
        other = plan.settings_for(item)
        if (other.image_model, other.device, other.dtype) != (first.image_model, first.device, first.dtype):
            raise SettingsError(
                f"{item.source} uses image model {other.image_model} but the batch's generator serves "
                f"{first.image_model}: a Ray batch uses one image model (split the goals file)"
            )
    return first


def _storage(url: str, plan: BatchPlan) -> str:
    if not url:
        return f"SQLite in {plan.batch_dir}"
    from refineloop.scale.postgres import where

    return f"postgres {where(url)}"


def run_ray(
    plan: BatchPlan,
    url: str,
    options: EngineOptions,
    *,
    out: TextIO,
    on_ready: Callable[[list[Any]], None] | None = None,
) -> list[SummaryRow]:
    """Run a batch on Ray; returns (and writes) the summary. Checkpoints and the queue live in Postgres when
    `url` names one, else in the batch folder, which only a Ray on this machine alone may share.

    `on_ready` is called with the runner actors once they are up (tests use it to kill one).
    """
    from refineloop.apps.batch import open_store

    options.check()
    check_storage(url, options.address)
    generator_settings = _one_image_model(plan)
    store = open_store(url, plan.batch_dir, pool_size=2)
    started = time.time()
    joined = False
    runners: list[Any] = []
    try:
        # One driver per batch: a second one would submit every run twice (their locks would refuse the copies).
        store.claim_batch(plan.batch_id)
        store.register(plan.batch_id, plan.items)
        joined = connect(options)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        out.write(
            f"ray: {len(nodes)} node(s), {_cluster_gpus()} GPU(s)   checkpoints and queue: {_storage(url, plan)}\n"
        )
        out.flush()
        _handle, info = deploy_generator(generator_settings, options)
        replicas = options.replicas or max(1, _cluster_gpus())
        out.write(
            f"generator: {replicas} replica(s) of {info['name']} on {info['placement']}, batches of up to "
            f"{options.max_batch_size}\nrunners: {options.runners} x {options.runs_per_runner} runs\n"
        )
        out.flush()
        runners = start_runners(url, plan.batch_dir, options)
        if on_ready is not None:
            on_ready(runners)
        try:
            _drive(plan, store, runners, options, out)
        except KeyboardInterrupt:
            out.write("\nstopped: unfinished runs resume from their last image when the same command runs again\n")
        rows = summarize(plan, store)
    finally:
        for runner in runners:
            # Runs still in flight stop mid-step here; their checkpoints carry them on the next start.
            ray.kill(runner, no_restart=True)
        store.close()
        if joined:
            ray.shutdown()
    out.write("\n" + write_summary(plan, rows, time.time() - started))
    out.flush()
    return rows


def _drive(plan: BatchPlan, store: Any, runners: list[Any], options: EngineOptions, out: TextIO) -> None:
    """Keep up to runners x runs_per_runner runs in flight until every item is finished or given up on."""
    records = store.records(plan.batch_id)
    todo = collections.deque(
        item
        for item in plan.items
        if records.get(item.thread_id, {}).get("status") != "done" and store.values(item).get("status") != "done"
    )
    finished = len(plan.items) - len(todo)
    total = len(plan.items)
    if finished:
        out.write(f"{finished} of {total} items finished earlier, left as they are\n")
    capacity = len(runners) * options.runs_per_runner
    load = [0] * len(runners)
    in_flight: dict[Any, tuple[BatchItem, int]] = {}
    not_before: dict[str, float] = {}
    busy_since: dict[str, float] = {}
    lost: dict[str, int] = collections.Counter()
    while todo or in_flight:
        now = time.monotonic()
        for _ in range(len(todo)):
            if len(in_flight) >= capacity:
                break
            item = todo.popleft()
            if not_before.get(item.thread_id, 0.0) > now:
                todo.append(item)
                continue
            slot = min(range(len(runners)), key=load.__getitem__)
            job = {"item": item.to_dict(), "settings": plan.settings_for(item).to_dict()}
            in_flight[runners[slot].run.remote(job)] = (item, slot)
            load[slot] += 1
        if not in_flight:
            time.sleep(0.2)
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        for ref in ready:
            item, slot = in_flight.pop(ref)
            load[slot] -= 1
            try:
                result = ItemResult(**ray.get(ref))
            except ray.exceptions.RayError as exc:
                # The runner died more often than Ray retries: try again later, a bounded number of times.
                lost[item.thread_id] += 1
                if lost[item.thread_id] <= 3:
                    not_before[item.thread_id] = time.monotonic() + 1.0
                    todo.append(item)
                    continue
                result = ItemResult(item.thread_id, "failed", error=f"its runner kept failing ({reason(exc)})")
                store.finished(item, result)
            if result.status == "busy":
                # Usually a process that is dying (its session, and lock, end in a moment): ask again shortly.
                since = busy_since.setdefault(item.thread_id, time.monotonic())
                if time.monotonic() - since < options.busy_timeout_s:
                    not_before[item.thread_id] = time.monotonic() + 1.0
                    todo.append(item)
                    continue
                out.write(f"[{item.index:03d}] {item.label}: still locked by another process, skipped\n")
                continue
            finished += 1
            best = f"best {result.best_score}/10" if result.best_score is not None else "no score"
            note = f"; {result.error}" if result.error else ""
            out.write(
                f"[{finished}/{total}] {item.label}: {result.status}, {best}, {result.images} images, "
                f"{result.seconds:.1f}s ({result.worker}){note}\n"
            )
            out.flush()
