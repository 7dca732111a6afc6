"""Runner actors: each hosts many runs as threads over one store (Postgres on a cluster or, on a Ray of this
machine alone, the batch folder: SQLite per run, file locks) and one model cache whose image model is the
generator. A runner that dies is restarted by Ray and its in-flight runs are retried; each resumes from its
last checkpoint."""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import serve

from refineloop.apps.batch import BatchItem, run_item
from refineloop.errors import ScaleError
from refineloop.scale.ray.options import APP, DEPLOYMENT, EngineOptions
from refineloop.scale.ray.reasons import reason
from refineloop.scale.ray.remote_model import RemoteImageModel, RemoteModelCache
from refineloop.settings import RunSettings


class Runner:
    """Hosts many runs as threads: one store (a Postgres pool and lock session, or the batch folder) and one
    model cache per process."""

    def __init__(self, checkpointer: str, batch_dir: str, app: str = APP) -> None:
        import refineloop.graph_build  # noqa: F401 - load the graph and node code now, not inside the first run
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
    actor: Any = ray.remote(Runner)
    actor = actor.options(
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
