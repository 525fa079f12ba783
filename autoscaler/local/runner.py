"""The single-machine loop: engines as processes behind the router, scaled by the controller's policy stages.

Every `scrape_interval_s` (1-2 s), per model: check the engines (ready, crashed, drained), scrape
each Ready engine's /metrics, build an Observation (autoscaler.metrics.observe) with the router's
arrivals and held requests, and, every policy interval, decide (policy.decide -> overrides stage)
and act (ProcessSupervisor.scale_to). Decisions, policy snapshots, engines and restart counts go
to SQLite (state.py) as they happen, so a restart of `warmscale local` picks up where it was.

The activator: when the router starts holding a request for a model (it has no Ready engine), it
pokes the loop, which wakes at once and decides for that model out of schedule if it still holds
requests with no engine Ready or starting (policy.decide -> overrides, as at a tick; an
`activator_poke` event records it). The regular decisions keep their schedule. Without it a
request held at zero would wait up to a policy interval before an engine is ordered.

    runner = LocalRunner(load_config("local.yaml"))
    runner.open()        # every check and every port bind: raises before anything starts
    runner.start()       # router (and API) servers, the loop thread
    code = runner.wait() # until stop() or an engine command turns out broken
    runner.stop()
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from autoscaler.actuators.process import EngineProcess, EngineState, ProcessSupervisor
from autoscaler.contract import Decision, Observation
from autoscaler.local.config import LocalConfig, ModelConfig, check_config, engine_command, policy_settings
from autoscaler.local.state import LocalState
from autoscaler.metrics.observe import ObservationBuilder, policy_rate_window_s
from autoscaler.metrics.scrape import EngineSample, Scraper
from autoscaler.router.app import Router, build_app
from autoscaler.router.endpoints import Endpoint
from autoscaler.router.server import ThreadedServer, bind_socket
from forecasting.live import make_prewarmer, with_forecast
from forecasting.prewarm import ForecastPrewarmer

__all__ = ["LocalRunner", "ModelView", "NAMESPACE"]

NAMESPACE = "default"   # local mode's one namespace in the API


@dataclasses.dataclass
class ModelView:
    """One model at one tick, for the live view, the report and the API."""

    time: float
    model: str
    engines: dict[str, int]
    arrival_rate: float | None
    held: int
    waiting: float | None
    running: float | None
    kv_cache_usage: float | None
    desired: int
    restarts: int
    decision: Decision | None


class _Model:
    """Everything local mode keeps for one model."""

    def __init__(self, cfg: ModelConfig, supervisor: ProcessSupervisor, policy, builder: ObservationBuilder,
                 scraper: Scraper):
        self.cfg, self.supervisor, self.policy, self.builder, self.scraper = cfg, supervisor, policy, builder, scraper
        self.ready: tuple[Endpoint, ...] = ()
        self.next_decision_at = 0.0
        self.poked_at = float("-inf")   # the last out-of-schedule decision the router's poke asked for
        self.prewarmer: ForecastPrewarmer | None = None   # when cfg.forecasting.enabled
        self.history_saved: int | None = None             # the window after the last forecaster history saved
        self.observation: Observation | None = None
        self.decision: Decision | None = None
        self.history: deque[ModelView] = deque(maxlen=100_000)


class _Endpoints:
    """The router's EndpointSource: each model's Ready engines, refreshed by the loop."""

    def __init__(self, models: dict[str, _Model]):
        self._models = models
        self._names = tuple(models)

    def models(self) -> Sequence[str]:
        return self._names

    def ready(self, model: str) -> Sequence[Endpoint]:
        m = self._models.get(model)
        return m.ready if m is not None else ()


class LocalRunner:
    def __init__(self, cfg: LocalConfig, source: str = "config", clock: Callable[[], float] = time.time,
                 on_tick: Callable[[list[ModelView]], None] | None = None):
        self.cfg = cfg
        self._source = source
        self._clock = clock
        self._on_tick = on_tick
        self.models: dict[str, _Model] = {}
        self.state: LocalState | None = None
        self.router: Router | None = None
        self._router_server: ThreadedServer | None = None
        self._api_server: ThreadedServer | None = None
        self._overrides = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()   # set by stop() and by the router's poke
        self._poke_lock = threading.Lock()
        self._poked: set[str] = set()    # models the router started holding a request for since the last look
        self.failed: str | None = None
        self.adopted: list[str] = []

    # ------------------------------------------------------------------ setting up (nothing started yet)
    def open(self) -> None:
        """Check the configuration, bind the ports, open the state; raises ConfigError / PortInUse."""
        check_config(self.cfg, self._source)
        router_sock = bind_socket(self.cfg.router.host, self.cfg.router.port)
        api_sock = None
        try:
            if self.cfg.api is not None:
                api_sock = bind_socket(self.cfg.api.host, self.cfg.api.port)
            self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
            self.state = LocalState(self.cfg.state_dir / "local.db")
            self._open_overrides()
            for m in self.cfg.models:
                self.models[m.name] = self._model(m)
            self.router = Router(_Endpoints(self.models), self.cfg.router.hold, on_hold=self._on_hold)
            self._router_server = ThreadedServer(build_app(self.router), router_sock, name="router")
            if api_sock is not None:
                self._api_server = ThreadedServer(self._api_app(), api_sock, name="api")
        except BaseException:
            router_sock.close()
            if api_sock is not None:
                api_sock.close()
            raise

    def _open_overrides(self) -> None:
        try:
            from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore
        except ImportError:   # the overrides store is not installed: no overrides
            return
        path = self.cfg.state_dir / "overrides.db"
        self._overrides = (SqliteOverrideStore(path), SqliteAuditLog(path))

    def _api_app(self):
        from autoscaler.api import create_app
        from autoscaler.api.auth import StaticTokenAuth

        if self._overrides is None:
            raise RuntimeError("the API needs the overrides store (autoscaler.overrides)")
        if self.cfg.api.tokens_file is None:
            raise ValueError("api.tokens_file: required when the API is on (lines 'token,user,role')")
        auth = StaticTokenAuth.from_file(self.cfg.api.tokens_file)
        store, audit = self._overrides
        return create_app(store, audit, self, auth, clock=self._clock, title="warmscale local")

    def _model(self, m: ModelConfig) -> _Model:
        from autoscaler.policy.registry import make_policy

        policy = make_policy(m.policy.name, m.capacity.to_capacity(), **policy_settings(m))
        snap = self.state.snapshot(m.name, m.policy.name)
        if snap is not None and hasattr(policy, "restore"):
            policy.restore(snap)
        supervisor = ProcessSupervisor(
            m.name, lambda port, devices, m=m: engine_command(m, port, devices), self.cfg.state_dir / "logs",
            device_slots=m.device_slots(), inflight=lambda engine_id: self.router.inflight(engine_id),
            on_change=lambda name=m.name: self._engines_changed(name), start_timeout_s=m.start_timeout_s,
            drain_timeout_s=m.drain_timeout_s, stop_grace_s=m.stop_grace_s, clock=self._clock,
            on_event=lambda kind, engine_id, data, name=m.name: self._event(name, kind, engine_id, data))
        supervisor.restarts = self.state.restarts(m.name)
        model = _Model(m, supervisor, policy, ObservationBuilder(m.name, rate_window_s=policy_rate_window_s(policy)),
                       Scraper(timeout_s=1.0, model=m.name))
        if m.forecasting.enabled:
            utilization = getattr(getattr(policy, "config", None), "target_utilization", None)   # peers have none
            model.prewarmer = make_prewarmer(m.capacity.to_capacity(), m.forecasting.quantile, m.min_replicas,
                                             m.max_replicas, utilization)
            self._restore_forecast_history(model)
        self._adopt(model)
        return model

    def _restore_forecast_history(self, m: _Model) -> None:
        """The forecaster goes on from the windows a previous run saved; one that cannot be read is
        recorded as an event and the forecaster starts again."""
        try:
            saved = self.state.forecast_history(m.cfg.name)
            if saved is not None:
                m.prewarmer.restore_history(m.cfg.name, saved)
                m.history_saved = m.prewarmer.windows_end(m.cfg.name)
        except ValueError as exc:
            self.state.event(self._clock(), m.cfg.name, "forecast_history_unreadable", "", {"error": str(exc)})

    def _save_forecast_history(self, m: _Model, now: float) -> None:
        """Once per closed window: what `_restore_forecast_history` reads after a restart."""
        history, ends = m.prewarmer.history_since(m.cfg.name, m.history_saved)
        if history is not None:
            self.state.save_forecast_history(m.cfg.name, history, now)
            m.history_saved = ends

    def _adopt(self, model: _Model) -> None:
        """Engines a previous run left alive (it was killed) are taken over, dead ones forgotten."""
        for rec in self.state.engines(model.cfg.name):
            engine = EngineProcess(rec.id, rec.port, rec.devices, rec.log_path, rec.pid, rec.started_at,
                                   ready_at=rec.ready_at)
            if engine.alive():
                model.supervisor.adopt(engine)
                model.supervisor.desired += 1
                self.adopted.append(rec.id)
            else:
                self.state.engine_gone(rec.id)

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self._router_server.start()
        if self._api_server is not None:
            self._api_server.start()
        self._thread = threading.Thread(target=self._loop, name="local-loop", daemon=True)
        self._thread.start()

    @property
    def router_url(self) -> str:
        return self._router_server.url

    @property
    def api_url(self) -> str | None:
        return self._api_server.url if self._api_server else None

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.cfg.scrape_interval_s
                    self.tick(self._clock())
                else:   # woken between ticks by the router
                    self.poke(self._clock())
            except Exception as exc:   # a bug in one tick must not leave engines unsupervised silently
                self.failed = f"local loop stopped: {type(exc).__name__}: {exc}"
                self._stop.set()
                break
            if self.failed:
                self._stop.set()
                break
            self._wake.wait(max(0.0, next_tick - time.monotonic()))
            self._wake.clear()   # before the poked models are taken: a poke after this wakes the next wait

    def tick(self, now: float) -> None:
        views = []
        poked = self._take_poked()
        for m in self.models.values():
            m.supervisor.tick()
            if m.supervisor.failed:
                self.failed = m.supervisor.failed
                return
            self._refresh_ready(m)
            obs = self._observe(m, now)
            if now >= m.next_decision_at:
                self._decide(m, obs, now)
                m.next_decision_at = now + m.policy.interval_s
            elif m.cfg.name in poked and self._held_at_zero(m):
                self._decide(m, obs, now, poked=True)
            views.append(self._view(m, now))
        if self._on_tick is not None:
            self._on_tick(views)

    # ------------------------------------------------------------------ the activator
    def _on_hold(self, model: str) -> None:
        """The router started holding a request of `model` (called on its event loop): wake the loop."""
        with self._poke_lock:
            self._poked.add(model)
        self._wake.set()

    def _take_poked(self) -> set[str]:
        with self._poke_lock:
            poked, self._poked = self._poked, set()
        return poked

    def _held_at_zero(self, m: _Model) -> bool:
        """The router holds requests of `m` and no engine of it is Ready or starting."""
        counts = m.supervisor.counts()
        return self.router.held(m.cfg.name) > 0 and counts["ready"] == 0 and counts["starting"] == 0

    def poke(self, now: float) -> None:
        """Between ticks: decide at once for each model the router poked that still holds requests with
        no engine Ready or starting. At most one such decision per model per scrape interval (more
        pokes within it wait for the next tick, which honours them); the decision schedule goes on."""
        for name in self._take_poked():
            m = self.models.get(name)
            if m is None:
                continue
            if now - m.poked_at < self.cfg.scrape_interval_s:
                with self._poke_lock:
                    self._poked.add(name)
                continue
            m.supervisor.tick()
            if m.supervisor.failed:
                self.failed = m.supervisor.failed
                return
            self._refresh_ready(m)
            if self._held_at_zero(m):
                self._decide(m, self._observe(m, now), now, poked=True)

    def _observe(self, m: _Model, now: float) -> Observation:
        ready = m.supervisor.ready()
        inflight = {e.id: self.router.inflight(e.id) for e in ready}
        results = m.scraper.scrape({e.id: f"{e.url}/metrics" for e in ready})
        samples = {k: r.sample for k, r in results.items() if r.sample is not None}
        errors = {k: r.error for k, r in results.items() if r.error}
        for engine_id, s in samples.items():
            if s.running is not None and s.waiting is not None:
                self.router.record_scrape_threadsafe(engine_id, s.running + s.waiting, inflight[engine_id])
        held = self.router.held(m.cfg.name)
        router_sample = EngineSample(time=now, arrivals=float(self.router.arrivals_total(m.cfg.name)),
                                     held=float(held))
        counts = m.supervisor.counts()
        reading = m.builder.build(now, samples, ready_replicas=len(ready), loading_replicas=counts["starting"],
                                  router=router_sample, errors=errors)
        obs = reading.observation
        if obs.ready_replicas == 0 and held > 0:
            # no engine holds a queue: the router's held requests are the model's queue (what a policy
            # that reads only the engines' queue sees), counted there once, not again as held requests
            obs = dataclasses.replace(obs, waiting_requests=(obs.waiting_requests or 0.0) + held, held_requests=0.0)
        if m.prewarmer is not None:
            obs = with_forecast(m.prewarmer, obs)
            self._save_forecast_history(m, now)
        m.observation = obs
        return obs

    def _decide(self, m: _Model, obs: Observation, now: float, poked: bool = False) -> None:
        if poked:   # out of schedule: the router holds requests and nothing is Ready or starting
            m.poked_at = now
            self.state.event(now, m.cfg.name, "activator_poke", "", {"held": self.router.held(m.cfg.name)})
        decision = m.policy.decide(obs)
        if self._overrides is not None:
            from autoscaler.policy.overrides import apply_overrides
            decision = apply_overrides(decision, self._overrides[0].active_specs(NAMESPACE, m.cfg.name, now), now)
        m.decision = decision
        self.state.record_decision(decision)
        if hasattr(m.policy, "snapshot"):
            self.state.save_snapshot(m.cfg.name, m.cfg.policy.name, m.policy.snapshot(), now)
        m.supervisor.scale_to(decision.desired)
        self._refresh_ready(m)

    def _refresh_ready(self, m: _Model) -> None:
        ready = tuple(Endpoint(e.id, e.url) for e in m.supervisor.ready())
        if ready != m.ready:
            m.ready = ready
            self.router.notify_threadsafe(m.cfg.name)

    def _engines_changed(self, model: str) -> None:
        m = self.models.get(model)
        if m is not None and self.router is not None:
            self._refresh_ready(m)

    def _event(self, model: str, kind: str, engine_id: str, data: dict) -> None:
        now = self._clock()
        self.state.event(now, model, kind, engine_id, data)
        m = self.models.get(model)
        engine = m.supervisor.engines.get(engine_id) if m is not None else None
        if kind == "engine_started" and engine is not None:
            self.state.engine_started(engine_id, model, engine.pid, engine.port, engine.devices, engine.log_path,
                                      engine.started_at)
        elif kind == "engine_ready":
            self.state.engine_ready(engine_id, now)
        elif kind in ("engine_stopped", "engine_crashed", "engine_start_failed"):
            self.state.engine_gone(engine_id)
        if kind in ("engine_crashed", "engine_start_failed") and m is not None:
            self.state.set_restarts(model, m.supervisor.restarts)

    def _view(self, m: _Model, now: float) -> ModelView:
        obs = m.observation
        view = ModelView(now, m.cfg.name, m.supervisor.counts(), obs.arrival_rate if obs else None,
                         self.router.held(m.cfg.name), obs.waiting_requests if obs else None,
                         obs.running_requests if obs else None, obs.kv_cache_usage if obs else None,
                         m.supervisor.desired, m.supervisor.restarts, m.decision)
        m.history.append(view)
        return view

    # ------------------------------------------------------------------ stopping
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the loop stops (stop() or a failure); True if it stopped."""
        return self._stop.wait(timeout_s)

    def stop(self, drain_s: float = 30.0) -> None:
        """Stop routing, let in-flight requests finish (at most `drain_s`), stop engines and servers."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        for m in self.models.values():
            m.ready = ()
        if self.router is not None:
            self.router.notify_threadsafe()
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline and any(
                    self.router.inflight(e) for m in self.models.values() for e in m.supervisor.engines):
                time.sleep(0.1)
        stoppers = [threading.Thread(target=m.supervisor.stop_all, name=f"stop-{name}")
                    for name, m in self.models.items()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        for m in self.models.values():
            for engine_id in list(m.supervisor.engines):
                self.state.engine_gone(engine_id)
            m.supervisor.close()
            m.scraper.close()
        for server in (self._api_server, self._router_server):
            if server is not None:
                server.stop()
        if self.state is not None:
            self.state.close()

    # ------------------------------------------------------------------ StatusSource (the API reads these)
    def list_autoscalers(self):
        return [self._state_of(m) for m in self.models.values()]

    def get_autoscaler(self, namespace: str, name: str):
        m = self.models.get(name)
        return self._state_of(m) if m is not None and namespace == NAMESPACE else None

    def recent_decisions(self, namespace: str, name: str, limit: int) -> Sequence[Decision]:
        if namespace != NAMESPACE or name not in self.models:
            return []
        return self.state.decisions(name, limit)

    def forecast(self, namespace: str, name: str):
        m = self.models.get(name)
        return m.observation.forecast if m is not None and m.observation is not None else None

    def _state_of(self, m: _Model):
        from autoscaler.api import AutoscalerState

        counts = m.supervisor.counts()
        d = m.decision
        return AutoscalerState(NAMESPACE, m.cfg.name, m.cfg.name, counts["ready"] + counts["starting"],
                               d.desired if d else m.supervisor.desired, counts["ready"], counts["starting"],
                               m.cfg.min_replicas, m.cfg.max_replicas, m.cfg.policy.name,
                               d.explain.override if d is not None and d.explain is not None else None,
                               d.time if d else 0.0)

