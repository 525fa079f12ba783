"""The low-lag sensor: scrape a model's Ready pods (and its router) directly, build the Observation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from autoscaler.metrics.observe import ObservationBuilder, Reading
from autoscaler.metrics.resolver import PodRef, PodResolver
from autoscaler.metrics.scrape import Scraper, ScrapeResult

__all__ = ["DirectSensor"]

ROUTER_TARGET = "\0router"   # the router's key among the pods' (no pod name holds a NUL)


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
        targets, errors = self.targets(ready_pods)
        results = self.scraper.scrape(targets, model=self.model)
        return self.read(now, results, len(ready_pods), loading_replicas, errors)

    def targets(self, ready_pods: Sequence[PodRef]) -> tuple[dict[str, str], dict[str, str]]:
        """What to scrape, `{target: url}`, and the pods that have no URL, `{pod: why}`. A caller
        that scrapes many models in one round (the controller) scrapes these and passes the
        results to `read`."""
        targets, errors = {}, {}
        for pod in ready_pods:
            url = self.resolver.metrics_url(pod)
            if url is None:
                errors[pod.name] = "the resolver gives no metrics URL for this pod"
            else:
                targets[pod.name] = url
        if self.router_url:
            targets[ROUTER_TARGET] = self.router_url
        return targets, errors

    def read(self, now: float, results: Mapping[str, ScrapeResult], ready_replicas: int, loading_replicas: int,
             errors: Mapping[str, str]) -> Reading:
        """The Reading from one round's scrape results of `targets`."""
        results = dict(results)
        router_result = results.pop(ROUTER_TARGET, None)
        samples = {pod: r.sample for pod, r in results.items() if r.sample is not None}
        errors = {**errors, **{pod: r.error or "no sample" for pod, r in results.items() if r.sample is None}}
        reading = self.builder.build(now, samples, ready_replicas, loading_replicas,
                                     router=router_result.sample if router_result else None, errors=errors)
        if router_result is not None and router_result.sample is None:
            reading = Reading(reading.observation, reading.missing, (*reading.reasons, f"router: {router_result.error}"),
                              reading.age_s, reading.source)
        return reading

    def close(self) -> None:
        if self._owns_scraper:
            self.scraper.close()
