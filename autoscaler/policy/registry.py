"""Build a policy by name: the one entry point the simulator, the controller and the local mode use.

    from autoscaler.policy.registry import make_policy, POLICY_NAMES
    p = make_policy("warmscale", capacity, min_replicas=1)
    p = make_policy("static", capacity, replicas=12)

`overrides` are fields of that policy's config model (validated by pydantic: an unknown or
invalid field raises `pydantic.ValidationError` naming the field).
"""
from __future__ import annotations

from typing import Any

from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.policy.types import Policy

__all__ = ["POLICY_NAMES", "make_policy"]

POLICY_NAMES: tuple[str, ...] = ("warmscale", "hpa-cpu", "keda", "knative", "aibrix", "static")


def make_policy(name: str, capacity: ReplicaCapacity, **overrides: Any) -> Policy:
    """Return a new policy object (fresh state) for `name`, one of `POLICY_NAMES`."""
    if not isinstance(capacity, ReplicaCapacity):
        raise TypeError(f"capacity: expected ReplicaCapacity, got {type(capacity).__name__}")
    if name == "warmscale":
        from autoscaler.policy.warmscale import WarmscaleConfig, WarmscalePolicy
        return WarmscalePolicy(capacity, WarmscaleConfig(**overrides))
    if name == "hpa-cpu":
        from autoscaler.policy.hpa import HpaCpuConfig, HpaCpuPolicy
        return HpaCpuPolicy(capacity, HpaCpuConfig(**overrides))
    if name == "keda":
        from autoscaler.policy.keda import KedaConfig, KedaPolicy
        return KedaPolicy(capacity, KedaConfig(**overrides))
    if name == "knative":
        from autoscaler.policy.knative import KnativeConfig, KnativePolicy
        return KnativePolicy(capacity, KnativeConfig(**overrides))
    if name == "aibrix":
        from autoscaler.policy.aibrix import AibrixConfig, AibrixPolicy
        return AibrixPolicy(capacity, AibrixConfig(**overrides))
    if name == "static":
        from autoscaler.policy.static import StaticConfig, StaticPolicy
        return StaticPolicy(capacity, StaticConfig(**overrides))
    raise ValueError(f"name: unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
