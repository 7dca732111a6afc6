"""The generator: the image model behind a batching queue, deployed as a Ray Serve deployment (one replica per GPU).

It loads the image model once (a diffusers model makes its img2img twin with `from_pipe`, sharing the weights).
`@serve.batch` gathers the `generate` calls of concurrent runs; each batch is split into groups that share a
batch key (`ImageRequest.batch_key`), and each group is drawn with the model's public `generate_many`, every
image keeping its own seeded generator. Only the batch handler draws, one batch at a time
(`max_concurrent_batches=1`): diffusers pipelines are not thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import os
import socket
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

from ray import serve

from refineloop.backends.image.protocol import ImageRequest
from refineloop.errors import RefineError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

Reply = tuple[Any, ...]
"""A generate call's answer: ("ok", [png bytes, ...]) or ("error", error class name, one-line message)."""


class GeneratorConfig(TypedDict):
    """What a generator replica was built with; a running one is reused only when this matches."""

    spec: str
    device: str
    dtype: str
    max_batch_size: int
    batch_wait_s: float


class _TunableBatcher(Protocol):
    """The setters `@serve.batch` adds to the method it wraps (Ray's type hints leave them out)."""

    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...

    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...


def images_in(requests: list[ImageRequest]) -> int:
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

        self.config: GeneratorConfig = {
            "spec": spec,
            "device": device,
            "dtype": dtype,
            "max_batch_size": max_batch_size,
            "batch_wait_s": batch_wait_s,
        }
        self.model = load_image_model(spec, device, dtype)
        batcher = cast(_TunableBatcher, self._batched)
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_s)
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
        """Tokens of `text` as the model's own tokenizer counts them (safe beside a running pipeline call)."""
        return int(self.model.count_tokens(text))

    async def generate(self, request: ImageRequest) -> Reply:
        """One request's images, made together with whatever other requests are waiting."""
        most = self.config["max_batch_size"]
        if len(request.seeds) <= most:
            return cast(Reply, await self._batched(request))  # serve.batch hands back one request's reply
        # More images than one call may hold (the batcher would refuse it): queue it in parts, still through
        # the batcher, so the pipeline keeps its single consumer.
        parts = [replace(request, seeds=request.seeds[i : i + most]) for i in range(0, len(request.seeds), most)]
        replies = await asyncio.gather(*(self._batched(part) for part in parts))
        failed = next((reply for reply in replies if reply[0] != "ok"), None)
        return failed or ("ok", [png for reply in replies for png in reply[1]])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, batch_size_fn=images_in)  # type: ignore[untyped-decorator]
    async def _batched(self, requests: list[ImageRequest]) -> list[Reply]:
        self.stats_counts["batches"] += 1
        self.stats_counts["requests"] += len(requests)
        self.batch_sizes.append(images_in(requests))
        # The blocking pipeline call runs off the event loop, so Serve keeps accepting (and queueing) requests.
        return await asyncio.to_thread(self.serve_batch, requests)

    def serve_batch(self, requests: list[ImageRequest]) -> list[Reply]:
        """One reply per request, in order: one model call per group of requests that share a batch key."""
        groups: dict[tuple[object, ...], list[int]] = collections.defaultdict(list)
        for position, request in enumerate(requests):
            groups[request.batch_key()].append(position)
        replies: list[Reply] = [("error", "ModelError", "not served")] * len(requests)
        for positions in groups.values():
            members = [requests[p] for p in positions]
            for position, reply in zip(positions, self._serve_group(members), strict=True):
                replies[position] = reply
        return replies

    def _serve_group(self, members: list[ImageRequest]) -> list[Reply]:
        """One model call for the group; on failure each request alone, so only the bad one fails."""
        if len(members) > 1:
            try:
                drawn = self.model.generate_many(members)
            except Exception as exc:  # any failure: fall back to single calls, which report it
                log.warning("merged call of %d requests failed (%s); serving them one by one", len(members), exc)
            else:
                self.stats_counts["pipeline_calls"] += 1
                self.stats_counts["images"] += sum(len(images) for images in drawn)
                return [("ok", [_png(image) for image in images]) for images in drawn]
        return [self.serve_one(member) for member in members]

    def serve_one(self, request: ImageRequest) -> Reply:
        """One request in its own model call; a failure becomes an error reply of one line."""
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
