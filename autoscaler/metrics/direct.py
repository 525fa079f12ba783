"""The low-lag sensor: scrape a model's Ready pods (and its router) directly, build the Observation."""
from __future__ import annotations

from collections.abc import Sequence

from autoscaler.metrics.observe import ObservationBuilder, Reading
from autoscaler.metrics.resolver import PodRef, PodResolver
from autoscaler.metrics.scrape import Scraper

__all__ = ["DirectSensor"]


class DirectSensor:
    """One model's direct-scrape sensor. `observe(now, ready_pods, loading)` scrapes every Ready
    pod's URL from `resolver` in parallel (and `router_url`, if given) and returns a `Reading`.
    Times are `time.time()` seconds; pass `now` on the same clock. A `scraper` passed in is shared
    (the caller closes it); otherwise the sensor owns one."""

    def __init__(self, model: str, resolver: PodResolver, rate_window_s: float = 60.0, timeout_s: float = 1.0,
                 router_url: str | None = None, scraper: Scraper | None = None):
        self.model = model
        self.resolver = resolver
        self.router_url = router_url
        self.builder = ObservationBuilder(model, rate_window_s)
        self._owns_scraper = scraper is None
        self.scraper = scraper or Scraper(timeout_s=timeout_s, model=model)

    def observe(self, now: float, ready_pods: Sequence[PodRef], loading_replicas: int) -> Reading:
        targets, errors = {}, {}
        for pod in ready_pods:
            url = self.resolver.metrics_url(pod)
            if url is None:
                errors[pod.name] = "the resolver gives no metrics URL for this pod"
            else:
                targets[pod.name] = url
        if self.router_url:
            targets["\0router"] = self.router_url
        results = self.scraper.scrape(targets, model=self.model)
        router_result = results.pop("\0router", None)
        samples = {pod: r.sample for pod, r in results.items() if r.sample is not None}
        errors.update({pod: r.error or "no sample" for pod, r in results.items() if r.sample is None})
        reading = self.builder.build(now, samples, len(ready_pods), loading_replicas,
                                     router=router_result.sample if router_result else None, errors=errors)
        if router_result is not None and router_result.sample is None:
            reading = Reading(reading.observation, reading.missing, (*reading.reasons, f"router: {router_result.error}"),
                              reading.age_s, reading.source)
        return reading

    def close(self) -> None:
        if self._owns_scraper:
            self.scraper.close()
