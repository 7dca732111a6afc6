"""How the Ray engine is laid out (`EngineOptions`), and the names its Serve application goes by."""

from __future__ import annotations

from dataclasses import dataclass

from refineloop.errors import SettingsError

APP = "refineloop"
"""The Serve application holding the generator."""
DEPLOYMENT = "generator"
"""The generator's deployment name inside `APP`."""


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
