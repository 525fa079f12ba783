"""Pure autoscaling policies: Observation (+ time) -> Decision. No I/O, no clock reads, no threads.

Public surface: `types` (Observation, Decision, Reason, Policy), `capacity` (ReplicaCapacity),
`registry` (make_policy, POLICY_NAMES).
"""
from autoscaler.policy.capacity import H100_LLAMA3_8B, ReplicaCapacity
from autoscaler.policy.registry import POLICY_NAMES, make_policy
from autoscaler.policy.types import Decision, Observation, Policy, Reason, Signal

__all__ = [
    "Decision", "Observation", "Policy", "Reason", "Signal",
    "ReplicaCapacity", "H100_LLAMA3_8B", "POLICY_NAMES", "make_policy",
]
