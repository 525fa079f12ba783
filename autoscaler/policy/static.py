"""Baseline: static provisioning at peak: a fixed replica count chosen at construction
(e.g. by the benchmark from the trace's peak demand). It ignores every metric."""
from __future__ import annotations

from pydantic import Field

from autoscaler.policy._common import PolicyConfig
from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.policy.types import Decision, Observation, Reason, Signal

__all__ = ["StaticConfig", "StaticPolicy"]


class StaticConfig(PolicyConfig):
    replicas: int = Field(ge=0)
    interval_s: float = Field(60.0, gt=0.0)


class StaticPolicy:
    name = "static"

    def __init__(self, capacity: ReplicaCapacity, config: StaticConfig) -> None:
        self.capacity = capacity
        self.config = config
        self.interval_s = config.interval_s

    @property
    def fixed_replicas(self) -> int:
        """The size a caller should start the fleet at (the simulator reads this)."""
        return self.config.replicas

    def decide(self, obs: Observation) -> Decision:
        cur = max(0, int(obs.ready_replicas)) + max(0, int(obs.loading_replicas))
        n = self.config.replicas
        return Decision(obs.model, float(obs.time), cur, n, Reason.STATIC, Signal.STATIC,
                        f"static provisioning at {n}")
