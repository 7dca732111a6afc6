"""Deploying the generator on Ray Serve, or reusing the one already running with the same configuration."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ray
from ray import serve

from refineloop.errors import ModelError
from refineloop.scale.ray.generator import Generator, GeneratorConfig
from refineloop.scale.ray.options import APP, DEPLOYMENT, EngineOptions
from refineloop.settings import RunSettings

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle


def cluster_gpus() -> int:
    """GPUs in the whole cluster (0 on a CPU-only one)."""
    return int(ray.cluster_resources().get("GPU", 0))


def deploy_generator(settings: RunSettings, options: EngineOptions) -> tuple[DeploymentHandle[Any], dict[str, Any]]:
    """Deploy (or reuse, when already running with the same configuration) the generator; returns its handle
    and its description."""
    gpus = cluster_gpus()
    replicas = options.replicas or max(1, gpus)
    config: GeneratorConfig = {
        "spec": settings.image_model,
        "device": settings.device,
        "dtype": settings.dtype,
        "max_batch_size": options.max_batch_size,
        "batch_wait_s": options.batch_wait_s,
    }
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING", "enable_access_log": False})
    reused = _running_generator(config, replicas)
    if reused is not None:
        return reused
    actor_options: dict[str, Any] = {"num_gpus": 1} if gpus else {"num_cpus": options.replica_cpus}
    deployment: Any = serve.deployment(Generator)
    deployment = deployment.options(
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
        handle: DeploymentHandle[Any] = serve.run(app, name=APP, route_prefix=None)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the image generator did not start: {first}") from None
    info: dict[str, Any] = handle.describe.remote().result(timeout_s=60)
    return handle, info


def _running_generator(config: GeneratorConfig, replicas: int) -> tuple[DeploymentHandle[Any], dict[str, Any]] | None:
    """The generator already running with this configuration and replica count, with its description; else None."""
    status = serve.status().applications.get(APP)
    if status is None or status.status != "RUNNING":
        return None
    handle: DeploymentHandle[Any] = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
    try:
        info: dict[str, Any] = handle.describe.remote().result(timeout_s=30)
        running = status.deployments.get(DEPLOYMENT)
        states = running.replica_states if running is not None else {}
        count = sum(n for state, n in states.items() if state == "RUNNING")
        if info["config"] == config and count == replicas:
            return handle, info
    except Exception:  # anything odd about the old app: deploy afresh
        return None
    return None
