"""Joining a Ray cluster, or starting a Ray of this machine alone, failing fast in one line when it cannot."""

from __future__ import annotations

import logging
import os
import socket

import ray

from refineloop.errors import ScaleError
from refineloop.scale.ray.options import EngineOptions


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
    if options.address and options.address != "auto":
        _probe(options.address)
    try:
        if options.address:
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # A Ray of our own serves this machine only: keep it on loopback (Ray otherwise advertises, and its
            # processes dial, the machine's network address).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            cpus = options.local_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScaleError(f"cannot join the Ray cluster ({first}): start it with `ray start --head`") from None
    return True
