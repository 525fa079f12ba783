"""The cluster controller: every `interval_s` the leader ticks every ModelAutoscaler.

One tick per model: count the engine pods (Ready, starting, unschedulable) from the pod cache,
read the metrics (Prometheus or direct scrape), let the model's own policy decide, apply the
operator's overrides, and, only when the count changes, mark the idlest pods for removal and write
the target's scale subresource; then write status when something in it changed.

A router holding a request for a model at zero pokes the controller through the model's
status.activation (`activation.py`): the watch sees it and the tick runs at once.

Threads: two reflectors (ModelAutoscalers, pods: list + watch, warm on leader and standby alike),
the Lease elector, apscheduler's interval job (max one tick at a time, late ticks coalesced), a
worker pool for the per-model I/O, and the probe/metrics server. Direct scrapes of every model's
Ready pods go out in one round before the models decide, so no model waits on its own scrape.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import kubernetes
import pydantic
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from autoscaler.actuators.drain import mark_deletion_costs
from autoscaler.actuators.scale import Scale, ScaleClient, ScaleRef
from autoscaler.contract import NUM_REQUESTS_RUNNING, Decision, OverrideSpec
from autoscaler.overrides import model as override_model
from autoscaler.overrides.kube import specs_from_objects
from autoscaler.controller.activation import Activations, with_activation
from autoscaler.controller.crd import API_VERSION, GROUP, KIND, PLURAL, VERSION
from autoscaler.controller.lease import LeaderElector
from autoscaler.controller.pods import FleetCount, PodIndex, count_fleet, pod_info
from autoscaler.controller.reflector import Reflector
from autoscaler.controller.spec import ModelAutoscalerSpec, policy_kwargs, replica_capacity
from autoscaler.controller.status import (Condition, decision_record, decode_forecast_history, decode_policy_state,
                                          encode_forecast_history, encode_policy_state, merge_conditions, push_recent,
                                          rfc3339, scaling_limited)
from autoscaler.controller.telemetry import ControllerMetrics, ProbeServer
from autoscaler.controller.warmplan import WARM_POOL_NAMESPACE, WarmPlanPublisher
from autoscaler.metrics.direct import DirectSensor
from autoscaler.metrics.observe import Reading, policy_rate_window_s
from autoscaler.metrics.resolver import PodIPResolver, PodResolver, TemplateResolver
from autoscaler.metrics.scrape import Scraper, ScrapeResult
from autoscaler.policy.overrides import apply_overrides
from autoscaler.policy.registry import make_policy
from forecasting.live import make_planner, make_prewarmer, with_forecast
from forecasting.prewarm import ForecastPrewarmer
from forecasting.warmpool import WarmPoolConfig, WarmPoolPlan

__all__ = ["ControllerConfig", "Controller"]

log = logging.getLogger("warmscale.controller")

OverridesFn = Callable[[str, str, float], Sequence[OverrideSpec]]


@dataclass
class ControllerConfig:
    namespace: str | None = None            # watch one namespace; None = all
    interval_s: float = 5.0
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080                 # 0 = any free port (see Controller.metrics_port)
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_namespace: str | None = None       # default: `namespace`, else warmscale-system
    lease_name: str = "warmscale-controller"
    lease_s: float = 10.0
    renew_deadline_s: float = 7.0
    retry_s: float = 1.0
    dry_run: bool = False                    # advisory: decide and write status only
    prometheus_url: str | None = None
    metrics_url_template: str | None = None  # direct scrapes: e.g. http://127.0.0.1:9000/pods/{name}/metrics
    workers: int = 8
    state_every_s: float = 300.0             # the policy snapshot in status is refreshed at least this often
    scale_reread_s: float = 30.0             # the target's scale is re-read this often (someone else may change it)
    warm_pool: WarmPoolConfig | None = None  # publish the warm-pool plan (autoscaler/controller/warmplan.py)
    warm_pool_namespace: str = WARM_POOL_NAMESPACE
    warm_pool_every_s: float = 600.0


@dataclass
class _Model:
    uid: str
    generation: int
    spec: ModelAutoscalerSpec
    policy: Any
    target: ScaleRef
    sensor: DirectSensor | None = None
    prewarmer: ForecastPrewarmer | None = None   # when spec.forecasting.enabled
    scale: Scale | None = None
    scale_read_at: float = 0.0
    written: tuple | None = None             # what the last status write said (changes trigger a write)
    status_at: float = 0.0
    recent: list = field(default_factory=list)
    conditions: list = field(default_factory=list)
    last_scale_time: str | None = None
    history_saved: int | None = None          # the window after the last forecaster history written to status


@dataclass
class _Round:
    """One model's part of a tick, from the pod cache and its spec, before any metric is read."""
    obj: dict
    key: tuple[str, str]
    model: _Model | None = None
    fleet: FleetCount | None = None
    targets: dict[str, str] = field(default_factory=dict)       # direct scrapes: {pod: url}
    unresolved: dict[str, str] = field(default_factory=dict)    # Ready pods without a URL: {pod: why}
    scraped: dict[str, ScrapeResult] = field(default_factory=dict)  # this tick's direct scrapes: {pod: result}
    problem: Exception | None = None


class Controller:
    def __init__(self, config: ControllerConfig, api_client: kubernetes.client.ApiClient,
                 resolver: PodResolver | None = None, overrides: OverridesFn | None = None):
        self.config = config
        self.api_client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.scales = ScaleClient(api_client)
        self.metrics = ControllerMetrics()
        self.errors: deque[tuple[float, str, str]] = deque(maxlen=500)
        self._resolver = resolver or (TemplateResolver(config.metrics_url_template) if config.metrics_url_template else None)
        self._overrides_fn = overrides        # tests may pass one; default: the ScalingOverride cache
        self._models: dict[tuple[str, str], _Model] = {}
        self._models_lock = threading.Lock()
        self._epoch = 0                        # bumped on every leadership change: model states are rebuilt
        self._epoch_seen = -1
        self._prom_sensors: dict[str, Any] = {}    # one per rate window in use (tick thread only)
        self._prom = None
        ns = config.namespace
        if ns:
            ma_list = lambda **kw: self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw)  # noqa: E731
            pod_list = lambda **kw: self.core.list_namespaced_pod(ns, **kw)  # noqa: E731
        else:
            ma_list = lambda **kw: self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)  # noqa: E731
            pod_list = lambda **kw: self.core.list_pod_for_all_namespaces(**kw)  # noqa: E731
        og, ov, op = override_model.GROUP, override_model.VERSION, override_model.PLURAL
        if ns:
            so_list = lambda **kw: self.custom.list_namespaced_custom_object(og, ov, ns, op, **kw)  # noqa: E731
        else:
            so_list = lambda **kw: self.custom.list_cluster_custom_object(og, ov, op, **kw)  # noqa: E731
        self.activations = Activations()
        self.autoscalers = Reflector("modelautoscalers", ma_list, transform=_strip_managed_fields, on_error=self._error,
                                     on_change=self._autoscaler_changed)
        self.overrides = Reflector("scalingoverrides", so_list, on_error=self._error)   # authors come from managedFields
        self.pods = Reflector("pods", pod_list, transform=pod_info, on_error=self._error)
        self.elector = LeaderElector(api_client, config.lease_namespace or ns or "warmscale-system", config.lease_name,
                                     config.identity, config.lease_s, config.renew_deadline_s, config.retry_s,
                                     on_error=self._error, on_change=self._leadership_changed)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="model")
        # window closes' fits and forecasts, off the ticks; one thread keeps each model's in order
        self._forecasts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast")
        # one client and pool for every model's direct scrapes (one per model costs ~1 MB each)
        self._scraper = Scraper(timeout_s=min(1.0, config.interval_s), max_workers=max(16, 2 * config.workers))
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._probe: ProbeServer | None = None
        self.ticks = 0
        self.last_tick_s: float | None = None
        self._warm_plan_due = 0.0              # the first tick of a leader publishes
        self._stopped = threading.Event()

    # ---------------------------------------------------------------- lifecycle
    @property
    def metrics_port(self) -> int:
        return self._probe.port if self._probe else self.config.metrics_port

    def start(self) -> "Controller":
        self._probe = ProbeServer(self.metrics, self._healthy, self._ready, self.config.metrics_host,
                                  self.config.metrics_port).start()
        self.autoscalers.start()
        self.pods.start()
        self.overrides.start()
        self.elector.start()
        self._scheduler.add_job(self.tick, "interval", seconds=self.config.interval_s, max_instances=1,
                                coalesce=True, misfire_grace_time=None, id="tick")
        self._scheduler.start()
        log.info("controller %s started", self.config.identity)
        return self

    def wait_until_leader(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.elector.is_leader():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Graceful: finish the running tick, save every policy's state to status, hand the Lease over."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._scheduler.shutdown(wait=True)
        if self.elector.is_leader():
            self._save_all_states()
        self.elector.stop(release=True)
        for reflector in (self.autoscalers, self.pods, self.overrides):
            reflector.stop()
        self._pool.shutdown(wait=True)
        self._forecasts.shutdown(wait=False, cancel_futures=True)
        self._scraper.close()
        for sensor in self._prom_sensors.values():
            sensor.close()
        if self._probe:
            self._probe.stop()

    def _healthy(self) -> bool:
        return not self._stopped.is_set()

    def _ready(self) -> bool:
        return all(r.synced.is_set() for r in (self.autoscalers, self.pods, self.overrides))

    def _leadership_changed(self, leader: bool) -> None:
        self.metrics.leader.set(1 if leader else 0)
        self._epoch += 1
        log.info("controller %s %s the lease", self.config.identity, "holds" if leader else "lost")

    def _autoscaler_changed(self, obj: dict | None) -> None:
        """From the ModelAutoscaler watch: a router's poke runs the tick now."""
        if obj is None:
            self.activations.listed(self.autoscalers.items())
        elif self.activations.seen(obj, time.time()):
            self.metrics.activations.inc()
            self.tick_now()

    def tick_now(self, delay_s: float = 0.0) -> None:
        """Run the tick in `delay_s`. While a tick runs the scheduler skips this; that tick then runs its
        models once more for a poke that came during it."""
        try:
            self._scheduler.modify_job("tick", next_run_time=datetime.now(timezone.utc) + timedelta(seconds=delay_s))
        except JobLookupError:   # not started yet, or stopping
            pass

    def _error(self, operation: str, exc: Exception) -> None:
        message = _describe(exc)
        self.errors.append((time.time(), operation, message))
        self.metrics.errors.labels(operation.split(" ")[0]).inc()
        log.warning("%s failed: %s", operation, message)

    def error_messages(self) -> list[str]:
        return [f"{op}: {msg}" for _, op, msg in list(self.errors)]

    # ---------------------------------------------------------------- tick
    def tick(self) -> None:
        if not self.elector.is_leader():
            return
        if not self._ready():
            if self.activations.pending(time.time()):   # a poke while the caches fill: try again shortly
                self.tick_now(delay_s=0.25)
            return
        now = time.time()
        self._tick_models(now)
        while self.activations.pending(time.time(), since=now):   # poked during that round: once more, at once
            now = time.time()
            self._tick_models(now)
        if self.config.warm_pool is not None and now >= self._warm_plan_due:
            self._warm_plan_due = now + self.config.warm_pool_every_s
            self.publish_warm_plan(now)

    def _tick_models(self, now: float) -> None:
        started = time.monotonic()
        if self._epoch_seen != self._epoch:
            self._reset_models()
        objects = self.autoscalers.items()
        index = PodIndex(self.pods.items())
        live = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects}
        for key in [k for k in self._models if k not in live]:
            self._forget(key)
        overrides = _by_target(self.overrides.items())
        rounds = [self._prepare(obj, index) for obj in objects]
        readings = self._read_metrics(rounds, now)
        list(self._pool.map(lambda r: self._tick_guarded(r, readings.get(r.key), overrides.get(r.key, []), now), rounds))
        elapsed = time.monotonic() - started
        self.metrics.tick_seconds.observe(elapsed)
        self.metrics.models.set(len(objects))
        self.last_tick_s = elapsed
        self.ticks += 1

    def publish_warm_plan(self, now: float) -> WarmPoolPlan | None:
        """Replace the warm-pool plan from the models' forecasts and replica counts (in the tick's
        thread, after the models' ticks: the forecasters are not read while they learn)."""
        with self._models_lock:
            models = list(self._models.values())
        forecasts = [m.prewarmer.demand_forecast(m.spec.model, now) for m in models if m.prewarmer is not None]
        replicas = {m.spec.model: m.scale.replicas for m in models if m.scale is not None}
        publisher = WarmPlanPublisher(self.config.warm_pool, self.core, self.config.warm_pool_namespace)
        try:
            return publisher.publish([f for f in forecasts if f is not None], replicas, now)
        except Exception as exc:  # noqa: BLE001 - reported; the plan in force stays
            self._error("warm-pool plan", exc)
            return None

    def _reset_models(self) -> None:
        self._epoch_seen = self._epoch
        with self._models_lock:
            self._models = {}

    def _forget(self, key: tuple[str, str]) -> None:
        with self._models_lock:
            model = self._models.pop(key, None)
        if model:
            self.metrics.forget((*key, model.spec.model))
        self.activations.forget(key)

    def _prepare(self, obj: dict, index: PodIndex) -> _Round:
        meta = obj["metadata"]
        rnd = _Round(obj, (meta["namespace"], meta["name"]))
        try:
            rnd.model = self._model(obj)
            rnd.fleet = count_fleet(index.select(rnd.key[0], rnd.model.spec.selector.match_labels))
            if rnd.model.sensor is not None:
                rnd.targets, rnd.unresolved = rnd.model.sensor.targets([p.ref for p in rnd.fleet.ready])
        except Exception as exc:  # noqa: BLE001 - reported by this model's own tick
            rnd.problem = exc
        return rnd

    def _read_metrics(self, rounds: list[_Round], now: float) -> dict[tuple[str, str], Reading]:
        """Every model's Reading, read for all models at once: one round of direct scrapes, and one
        batch of PromQL queries per rate window, so no model's tick waits on a request of its own."""
        ready = [r for r in rounds if r.problem is None]
        direct = [r for r in ready if r.model.sensor is not None]
        scraped = self._scrape(direct)
        readings = {}
        for r in direct:
            r.scraped = scraped.get(r.key, {})
            readings[r.key] = r.model.sensor.read(now, r.scraped, len(r.fleet.ready), len(r.fleet.loading), r.unresolved)
        readings.update(self._read_prometheus([r for r in ready if r.model.sensor is None], now))
        return readings

    def _scrape(self, rounds: list[_Round]) -> dict[tuple[str, str], dict[str, ScrapeResult]]:
        """The direct-scraped models' Ready pods, all in flight at once."""
        jobs = {(r.key, target): (target, url, r.model.spec.model)
                for r in rounds for target, url in r.targets.items()}
        by_model: dict[tuple[str, str], dict[str, ScrapeResult]] = {}
        for (key, target), result in self._scraper.scrape_jobs(jobs).items():
            by_model.setdefault(key, {})[target] = result
        return by_model

    def _read_prometheus(self, rounds: list[_Round], now: float) -> dict[tuple[str, str], Reading]:
        if rounds and self.config.prometheus_url is None:
            return {r.key: _no_prometheus_url(r, now) for r in rounds}
        by_window: dict[str, list[_Round]] = {}
        for r in rounds:
            by_window.setdefault(f"{max(1, round(policy_rate_window_s(r.model.policy)))}s", []).append(r)
        from autoscaler.metrics.prometheus import FleetRead   # the Prometheus client loads only where it is used

        readings = {}
        for window, members in by_window.items():
            reads = [FleetRead(r.model.spec.model, tuple(sorted(r.model.spec.metrics.prometheus_labels.items())),
                               len(r.fleet.ready), len(r.fleet.loading)) for r in members]
            readings.update(zip((r.key for r in members), self._prometheus(window).observe_many(reads, now)))
        return readings

    def _prometheus(self, window: str):
        sensor = self._prom_sensors.get(window)
        if sensor is None:
            from autoscaler.metrics.prometheus import PrometheusSensor
            sensor = self._prom_sensors[window] = PrometheusSensor(
                self.config.prometheus_url, rate_window=window, timeout_s=min(2.0, self.config.interval_s))
        return sensor

    def _tick_guarded(self, rnd: _Round, reading: Reading | None, override_objects: list[dict], now: float) -> None:
        try:
            if isinstance(rnd.problem, (pydantic.ValidationError, ValueError)):
                self._write_invalid(rnd.obj, now, rnd.problem)
            elif rnd.problem is not None:
                raise rnd.problem
            else:
                self._tick_model(rnd, reading, override_objects, now)
        except Exception as exc:  # noqa: BLE001 - one model's failure never stops the others
            self._error(f"tick {rnd.key[0]}/{rnd.key[1]}", exc)
            self._write_failure(rnd.obj, now, exc)

    def _model(self, obj: dict) -> _Model:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        model = self._models.get(key)
        if model and model.uid == meta["uid"] and model.generation == meta.get("generation", 0):
            return model
        edited = model if model is not None and model.uid == meta["uid"] else None   # the same object, spec changed
        spec = ModelAutoscalerSpec.model_validate(obj.get("spec") or {})
        policy = make_policy("warmscale", replica_capacity(spec), **policy_kwargs(spec, self.config.interval_s))
        try:
            if edited is not None and hasattr(edited.policy, "snapshot"):
                state = edited.policy.snapshot()          # a spec edit keeps what the policy has learnt
            else:
                state = decode_policy_state((obj.get("status") or {}).get("policyState"))
            if state and hasattr(policy, "restore"):
                policy.restore(state)
        except Exception as exc:  # noqa: BLE001 - a state that no longer fits: start fresh, say so
            self._error(f"restore {key[0]}/{key[1]}", exc)
        ref = spec.scale_target_ref
        new = _Model(uid=meta["uid"], generation=meta.get("generation", 0), spec=spec, policy=policy,
                     target=ScaleRef(ref.api_version, ref.kind, ref.name, key[0]))
        if spec.forecasting.enabled:
            new.prewarmer = self._prewarmer(spec, policy, edited, obj)
        if edited is not None:
            new.scale, new.scale_read_at, new.recent = edited.scale, edited.scale_read_at, edited.recent
            new.conditions, new.last_scale_time = edited.conditions, edited.last_scale_time
            new.history_saved = edited.history_saved
        else:
            status = obj.get("status") or {}
            new.recent = list(status.get("recentDecisions") or [])
            new.conditions = list(status.get("conditions") or [])
            new.last_scale_time = status.get("lastScaleTime")
        if spec.metrics.source == "direct":
            resolver = self._resolver or PodIPResolver(spec.metrics.port, spec.metrics.path)
            new.sensor = DirectSensor(spec.model, resolver, rate_window_s=policy_rate_window_s(policy), scraper=self._scraper)
        with self._models_lock:
            self._models[key] = new
        return new

    def _prewarmer(self, spec: ModelAutoscalerSpec, policy, previous: _Model | None, obj: dict):
        """The model's prewarmer; a spec edit keeps its history and re-sizes its planner, and a new or
        restarted controller restores the history its status holds."""
        sizing = (policy.capacity, spec.forecasting.quantile, spec.min_replicas, spec.max_replicas,
                  policy.config.target_utilization)
        if previous is None or previous.prewarmer is None:
            prewarmer = make_prewarmer(*sizing, run_refresh=self._forecasts.submit)
            try:
                history = decode_forecast_history((obj.get("status") or {}).get("forecastHistory"))
                if history is not None:
                    prewarmer.restore_history(spec.model, history)
            except ValueError as exc:   # a history that no longer fits: forecast from scratch, say so
                meta = obj["metadata"]
                self._error(f"restore forecast history {meta['namespace']}/{meta['name']}", exc)
            return prewarmer
        previous.prewarmer.planner = make_planner(*sizing)
        return previous.prewarmer

    def _active_overrides(self, ns: str, name: str, objects: list[dict], now: float) -> list[OverrideSpec]:
        if self._overrides_fn is not None:
            return list(self._overrides_fn(ns, name, now))
        return specs_from_objects(objects, ns, name, now) if objects else []

    def _tick_model(self, rnd: _Round, reading: Reading, override_objects: list[dict], now: float) -> None:
        obj, (ns, name), model, fleet = rnd.obj, rnd.key, rnd.model, rnd.fleet
        meta, spec = obj["metadata"], model.spec
        observation = with_activation(reading.observation, fleet, self.activations.take(rnd.key, now))
        if model.prewarmer is not None:
            observation = with_forecast(model.prewarmer, observation)
        decision = model.policy.decide(observation)
        overrides = self._active_overrides(ns, name, override_objects, now)
        if overrides:
            decision = apply_overrides(decision, overrides, now)
        if model.scale is None or now - model.scale_read_at >= self.config.scale_reread_s:
            first = model.scale is None
            model.scale, model.scale_read_at = self.scales.read(model.target), now
            if first:   # spread the models' periodic re-reads over the period, not all in one tick
                model.scale_read_at -= _spread(meta["uid"], self.config.scale_reread_s)
        target = decision.desired
        held_at = None
        if fleet.unschedulable and target > model.scale.replicas:
            target = held_at = model.scale.replicas      # no room for what is already asked: ask no more
        advisory = self.config.dry_run or spec.advisory
        if target != model.scale.replicas and not advisory:
            self._scale(rnd, decision, target, now)
        key = (ns, name, spec.model)
        m = self.metrics
        m.desired.labels(*key).set(decision.desired)
        m.current.labels(*key).set(len(fleet.ready) + len(fleet.loading))
        m.ready.labels(*key).set(len(fleet.ready))
        m.pending.labels(*key).set(len(fleet.unschedulable))
        m.set_reason(key, str(decision.reason))
        conditions = [
            Condition("Ready", True, "Advisory" if advisory else "Scaling",
                      "advisory mode: status only, the target is not changed" if advisory else "the controller scales the target"),
            _metrics_condition(reading),
            scaling_limited(decision, fleet.limited_message, held_at),
            Condition("Overridden", bool(decision.explain and decision.explain.override), "Override" if decision.explain and decision.explain.override else "NoOverride",
                      f"override {decision.explain.override} decided: {decision.detail}" if decision.explain and decision.explain.override else ""),
        ]
        self._write_status(obj, model, decision, fleet, conditions, now)

    # ---------------------------------------------------------------- writes
    def _leader_or_abort(self) -> None:
        if not self.elector.is_leader():
            raise _NotLeader("this replica no longer holds the lease; write skipped")

    def _scale(self, rnd: _Round, decision: Decision, target: int, now: float) -> None:
        model, obj, fleet = rnd.model, rnd.obj, rnd.fleet
        old = model.scale.replicas
        if target < old and fleet.ready:
            running = self._running_by_pod(rnd)
            self._leader_or_abort()
            patched = mark_deletion_costs(self.core, fleet.ready, running)
            self.metrics.writes.labels("pod_annotation").inc(len(patched))
        self._leader_or_abort()
        model.scale = self.scales.write(model.target, target, model.scale)
        model.scale_read_at = now
        model.last_scale_time = rfc3339(now)
        self.metrics.writes.labels("scale").inc()
        verb = "ScaledUp" if target > old else "ScaledDown"
        self._event(obj, verb, f"{model.target.kind} {model.target.name}: {old} -> {target} replicas "
                               f"({decision.reason}, {decision.signal}): {decision.detail}")

    def _running_by_pod(self, rnd: _Round) -> dict[str, float | None]:
        model = rnd.model
        if model.sensor is not None:     # this tick's scrapes: a pod that gave no sample counts as busiest
            return {pod: (r.sample.running if r.sample else None) for pod, r in rnd.scraped.items()}
        if self.config.prometheus_url is None:
            return {}
        if self._prom is None:
            from prometheus_api_client import PrometheusConnect
            self._prom = PrometheusConnect(url=self.config.prometheus_url, disable_ssl=True)
        try:
            rows = self._prom.custom_query(f'sum by (pod) ({NUM_REQUESTS_RUNNING}{{model_name="{model.spec.model}"}})')
        except Exception as exc:  # noqa: BLE001 - unknown counts make every pod equally precious
            self._error("running requests by pod", exc)
            return {}
        return {row["metric"].get("pod", ""): float(row["value"][1]) for row in rows}

    def _event(self, obj: dict, reason: str, message: str) -> None:
        meta = obj["metadata"]
        stamp = rfc3339(time.time())
        body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message[:1024], "type": "Normal", "count": 1,
                "firstTimestamp": stamp, "lastTimestamp": stamp,
                "source": {"component": "warmscale-controller"},
                "reportingComponent": "warmscale.io/controller", "reportingInstance": self.config.identity}
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
            self.metrics.writes.labels("event").inc()
        except Exception as exc:  # noqa: BLE001 - an event lost is not a scale lost
            self._error("create event", exc)

    def _write_status(self, obj: dict, model: _Model, decision: Decision, fleet: FleetCount,
                      conditions: list[Condition], now: float) -> None:
        generation = obj["metadata"].get("generation", 0)
        record = decision_record(decision, now)
        recent = push_recent(model.recent, record)
        signature = (decision.desired, str(decision.reason), len(fleet.ready), len(fleet.loading), len(fleet.unschedulable),
                     model.scale.replicas, generation, tuple((c.type, c.status, c.reason) for c in conditions))
        if signature == model.written and now - model.status_at < self.config.state_every_s:
            return
        merged = merge_conditions(model.conditions, conditions, now, generation)
        status: dict[str, Any] = {
            "observedGeneration": generation, "currentReplicas": len(fleet.ready) + len(fleet.loading),
            "readyReplicas": len(fleet.ready), "loadingReplicas": len(fleet.loading),
            "pendingReplicas": len(fleet.unschedulable), "desiredReplicas": decision.desired,
            "targetReplicas": model.scale.replicas, "lastDecision": record, "recentDecisions": recent,
            "conditions": merged, "leader": self.config.identity}
        if model.last_scale_time:
            status["lastScaleTime"] = model.last_scale_time
        saved, history_window = self._state_to_save(model, now)
        status.update(saved)
        self._patch_status(obj, status)
        model.history_saved = history_window
        if model.written is None:   # spread the models' periodic refreshes over the period, not one tick
            now -= _spread(obj["metadata"]["uid"], self.config.state_every_s)
        model.written, model.status_at, model.recent, model.conditions = signature, now, recent, merged

    def _patch_status(self, obj: dict, status: dict) -> None:
        self._leader_or_abort()
        meta = obj["metadata"]
        try:
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"],
                                                              {"status": status}, _content_type="application/merge-patch+json")
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:       # deleted meanwhile
                return
            raise
        self.metrics.writes.labels("status").inc()

    def _write_invalid(self, obj: dict, now: float, exc: Exception) -> None:
        self._write_condition_only(obj, now, Condition("Ready", False, "InvalidSpec", _describe(exc)))

    def _write_failure(self, obj: dict, now: float, exc: Exception) -> None:
        if isinstance(exc, _NotLeader):
            return
        reason = "Forbidden" if isinstance(exc, kubernetes.client.ApiException) and exc.status == 403 else "TickFailed"
        try:
            self._write_condition_only(obj, now, Condition("Ready", False, reason, _describe(exc)))
        except Exception as inner:  # noqa: BLE001
            self._error("status", inner)

    def _write_condition_only(self, obj: dict, now: float, condition: Condition) -> None:
        status = obj.get("status") or {}
        old = [c for c in status.get("conditions") or [] if c.get("type") == condition.type]
        if old and old[0].get("status") == "False" and old[0].get("reason") == condition.reason \
                and old[0].get("message") == condition.message[:1024]:
            return
        others = [c for c in status.get("conditions") or [] if c.get("type") != condition.type]
        generation = obj["metadata"].get("generation", 0)
        self._patch_status(obj, {"conditions": others + merge_conditions(old, [condition], now, generation),
                                 "observedGeneration": generation})

    @staticmethod
    def _state_to_save(model: _Model, now: float) -> tuple[dict[str, Any], int | None]:
        """What a new or restarted controller restores, as status fields: the policy's snapshot, and
        the forecaster's history when a window closed since it was last written (it changes only
        then, and it is the larger part). Also the window the history written ends before."""
        fields: dict[str, Any] = {}
        if hasattr(model.policy, "snapshot"):
            fields["policyState"] = encode_policy_state(model.policy.snapshot())
            fields["policyStateTime"] = rfc3339(now)
        if model.prewarmer is None:
            return fields, model.history_saved
        history, ends = model.prewarmer.history_since(model.spec.model, model.history_saved)
        if history is not None:
            fields["forecastHistory"] = encode_forecast_history(history)
        return fields, ends

    def _save_all_states(self) -> None:
        """Write every policy's snapshot and forecaster's history to status (graceful shutdown)."""
        now = time.time()
        for (ns, name), model in list(self._models.items()):
            obj = self.autoscalers.get(ns, name)
            saved, history_window = self._state_to_save(model, now)
            if obj is None or not saved:
                continue
            try:
                self._patch_status(obj, saved)
                model.history_saved = history_window
            except Exception as exc:  # noqa: BLE001
                self._error("status", exc)


def _strip_managed_fields(obj: dict) -> dict:
    """Cached objects without metadata.managedFields (server-side apply bookkeeping the controller
    never reads; with a status writer per object it is most of a cached object's size)."""
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def _spread(uid: str, period_s: float) -> float:
    """A model's fixed offset in [0, period_s): periodic work of many models falls on different ticks."""
    return zlib.crc32(uid.encode()) % 1000 / 1000 * period_s


def _by_target(objects: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for obj in objects:
        key = (obj.get("metadata", {}).get("namespace", ""), (obj.get("spec") or {}).get("target", ""))
        grouped.setdefault(key, []).append(obj)
    return grouped


class _NotLeader(Exception):
    pass


def _no_prometheus_url(rnd: _Round, now: float) -> Reading:
    from autoscaler.contract import Observation
    obs = Observation(rnd.model.spec.model, now, len(rnd.fleet.ready), len(rnd.fleet.loading), None, None, None, None, None, None)
    return Reading(obs, ("waiting_requests",), ("spec.metrics.source is prometheus but the controller has no --prometheus-url",),
                   None, "prometheus")


def _metrics_condition(reading: Reading) -> Condition:
    stale = any("stale" in r for r in reading.reasons)
    core_missing = [f for f in ("waiting_requests", "running_requests") if f in reading.missing]
    if not stale and not core_missing:
        return Condition("MetricsAvailable", True, "MetricsFresh", f"{reading.source} metrics, age {reading.age_s or 0:.0f} s"
                         + (f"; no value for {', '.join(reading.missing)}" if reading.missing else ""))
    text = "; ".join(reading.reasons) or f"missing: {', '.join(reading.missing)}"
    return Condition("MetricsAvailable", False, "MetricsStale" if stale else "MetricsMissing",
                     f"{text}; the policy will not shrink the fleet on this data")


def _describe(exc: Exception) -> str:
    if isinstance(exc, kubernetes.client.ApiException):
        import json
        try:
            body = json.loads(exc.body or "{}")
            return f"{exc.status} {body.get('reason', exc.reason)}: {body.get('message', '')}".strip()
        except ValueError:
            return f"{exc.status} {exc.reason}"
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return f"{type(exc).__name__}: {exc}"
