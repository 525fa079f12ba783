"""The router's Prometheus series, named in autoscaler.contract (ROUTER_*), one registry per router."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from autoscaler.contract import (ROUTER_ARRIVALS, ROUTER_HELD_REQUESTS, ROUTER_HOLD_SECONDS, ROUTER_MODEL_LABEL,
                                 ROUTER_REJECTED)

__all__ = ["RouterMetrics"]

# Hold times span a cold start: sub-second (an engine was just listed) to minutes.
HOLD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)


def _counter_base(name: str) -> str:
    """prometheus_client appends `_total` to a counter's name itself."""
    return name.removesuffix("_total")


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        label = (ROUTER_MODEL_LABEL,)
        self.arrivals = Counter(_counter_base(ROUTER_ARRIVALS), "Requests arriving at the router, per model "
                                "(counted on arrival, held ones included: the demand signal)", label,
                                registry=self.registry)
        self.held = Gauge(ROUTER_HELD_REQUESTS, "Requests held now, waiting for a Ready engine", label,
                          registry=self.registry)
        self.hold_seconds = Histogram(ROUTER_HOLD_SECONDS, "Seconds a request was held before an engine took it "
                                      "or it was rejected", label, buckets=HOLD_BUCKETS, registry=self.registry)
        self.rejected = Counter(_counter_base(ROUTER_REJECTED), "Requests answered 503 past the hold bounds", label,
                                registry=self.registry)
        self._arrivals_by_model: dict[str, int] = {}

    def arrived(self, model: str) -> None:
        self.arrivals.labels(model).inc()
        self._arrivals_by_model[model] = self._arrivals_by_model.get(model, 0) + 1

    def arrivals_total(self, model: str) -> int:
        """The arrivals counter's value (read in-process by the local mode's sensor)."""
        return self._arrivals_by_model.get(model, 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
