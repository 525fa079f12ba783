"""The policy interface, re-exported from the shared leaf module `autoscaler.contract`."""
from autoscaler.contract import (Decision, DecisionExplain, DemandForecast, Observation, Policy, Reason,
                                 ReplicaFloor, Signal)

__all__ = ["DemandForecast", "ReplicaFloor", "Observation", "Reason", "Signal", "Decision",
           "DecisionExplain", "Policy"]
