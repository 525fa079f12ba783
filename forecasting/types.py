"""Types shared between forecasting and its consumers, defined once in `autoscaler.contract`."""
from autoscaler.contract import DemandForecast, ReplicaFloor

__all__ = ["DemandForecast", "ReplicaFloor"]
