"""What nodes see inside a runner actor: `RemoteImageModel`, the ImageModel protocol over the generator's Serve
handle, and `RemoteModelCache`, the model cache that hands it out. Node code is the same as on one machine."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ray
from ray import serve

from refineloop.backends.image.protocol import ImageRequest, ImageTraits, check_one_batch
from refineloop.backends.model_cache import ModelCache
from refineloop.errors import ModelError
from refineloop.settings import RunSettings

if TYPE_CHECKING:
    from PIL import Image
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)

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


class RemoteImageModel:
    """The ImageModel protocol over a Serve handle: what nodes see inside a runner actor."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
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
        images: list[Image.Image] = []
        for data in reply[1]:
            image = Image.open(io.BytesIO(data))
            image.load()
            images.append(image)
        return images

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """Each request's images; the generator batches them, with other runs' requests, as they arrive."""
        check_one_batch(requests)
        return [self.generate(request) for request in requests]

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
