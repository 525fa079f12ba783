"""Fleet emulator: vLLM's /metrics for fake engine pods, served on 127.0.0.1.

kwok pods run no engine, and their 10.x addresses must never be dialled. The emulator stands in
for the engines: one `engine.Replica` (the simulator's engine model) per Ready pod, fed by a trace
replay (or `submit()`) on a real-time clock, optionally compressed (`time_scale` virtual seconds
per wall second). The caller owns the pod set: it watches the API server and calls `set_pods()`
with every pod of a model and whether it is Ready. Requests are routed round-robin over Ready
pods; with none Ready the router holds them (up to `gateway_timeout_s`), as the simulator does.

HTTP (uvicorn on 127.0.0.1):

    /metrics                  every Ready pod's vLLM series (labels model_name, engine, pod,
                              namespace) plus the router's series per model: what Prometheus scrapes
    /pods/<name>/metrics      one pod's vLLM series (503 while not Ready, 404 unknown); also
    /pods/<namespace>/<name>/metrics (for a URL template such as the controller's)
    /router/metrics           the router's series (warmscale_router_arrivals_total, _held_requests)

`resolver()` gives the `PodResolver` that sends the controller's direct scrapes here. Counters
and times are in virtual seconds: with `time_scale != 1`, a rate per wall second is `time_scale`
times the rate per virtual second.
"""
from __future__ import annotations

import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from autoscaler.contract import (GENERATION_TOKENS, KV_CACHE_USAGE, MODEL_LABEL, NUM_PREEMPTIONS,
                                 NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, PROMPT_TOKENS, REQUEST_SUCCESS,
                                 ROUTER_ARRIVALS, ROUTER_HELD_REQUESTS, ROUTER_MODEL_LABEL, TIME_TO_FIRST_TOKEN)
from autoscaler.metrics.resolver import PodRef
from autoscaler.sim.engine import TTFT_BUCKETS, Replica, Request

__all__ = ["FleetEmulator", "EmulatorResolver", "PodStats"]

POD_LABEL = "pod"
NAMESPACE_LABEL = "namespace"


class _Sink:
    """Replica writes per-request times into arrays indexed by request id; the emulator keeps none."""

    def __setitem__(self, key, value) -> None:
        pass


_SINK = _Sink()


def _family(name: str) -> str:
    return name.removesuffix("_total")


@dataclass
class _Pod:
    name: str
    replica: Replica
    hist: list[int]
    prefilling: deque = field(default_factory=deque)   # routed requests whose first token is not out yet
    prompt_tokens: int = 0
    ttft_sum: float = 0.0

    def add(self, req: Request, at: float) -> None:
        self.replica.advance(at)
        self.replica.add(req, at)
        self.prefilling.append(req)

    def advance(self, t: float) -> None:
        self.replica.advance(t)
        # vLLM counts prompt tokens at prefill: count each request when its first token is out
        # (first tokens come out in routing order: admission and chunked prefill are FCFS)
        q = self.prefilling
        while q and q[0].first >= 0:
            r = q.popleft()
            self.prompt_tokens += r.prompt
            self.ttft_sum += r.first - r.arrival


@dataclass(frozen=True, slots=True)
class PodStats:
    """One Ready pod's engine state (what its /metrics says), for tests and benchmarks."""

    waiting: int
    running: int
    kv_cache_usage: float
    request_success: int
    prompt_tokens: int
    generation_tokens: int
    preemptions: int


@dataclass
class _Model:
    name: str
    pods: dict[str, _Pod | None] = field(default_factory=dict)   # None: exists, not Ready
    gateway: deque = field(default_factory=deque)
    rr: int = 0
    arrivals: int = 0
    dropped: int = 0

    def ready(self) -> list[_Pod]:
        return [p for p in self.pods.values() if p is not None]


class FleetEmulator:
    """Emulated vLLM engines for a fleet of fake pods (see the module docstring).

    `profile`: an `autoscaler.sim.profile.EngineProfile` (engine parameters per replica).
    `start_virtual_s`: the virtual time at start (a trace's `start_s` when replaying a slice).
    """

    def __init__(self, profile, namespace: str = "default", time_scale: float = 1.0, start_virtual_s: float = 0.0,
                 gateway_timeout_s: float = 600.0, host: str = "127.0.0.1", port: int = 0, pump_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if not host.startswith("127.") and host != "localhost":
            raise ValueError(f"the emulator serves on loopback only, got host {host!r}")
        self.profile = profile
        self.namespace = namespace
        self.time_scale = time_scale
        self.start_virtual_s = start_virtual_s
        self.gateway_timeout_s = gateway_timeout_s
        self.pump_s = pump_s
        self.clock = clock
        self._limit = min(profile.engine.max_model_len, profile.engine.kv_cache_tokens)
        self._lock = threading.RLock()
        self._models: dict[str, _Model] = {}
        self._replays: list[list] = []       # [model, arrivals, prompts, outputs, next index]
        self._rid = 0
        self._seq = 0
        self._wall0 = clock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self._server: uvicorn.Server | None = None

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """Virtual seconds: `start_virtual_s` plus wall seconds since start x `time_scale`."""
        return self.start_virtual_s + (self.clock() - self._wall0) * self.time_scale

    def rebase(self, virtual_s: float) -> None:
        """Set the clock to `virtual_s` now (e.g. a trace slice's start once the initial pods are
        Ready). Only before the first request: engines that served nothing just move to the new time."""
        with self._lock:
            if self._rid or any(m.arrivals for m in self._models.values()):
                raise RuntimeError("rebase: requests have already arrived; the clock can only be set before the first")
            self.start_virtual_s = virtual_s
            self._wall0 = self.clock()
            for m in self._models.values():
                for pod in m.ready():
                    pod.replica.t = virtual_s

    # ------------------------------------------------------------------ fleet (the caller's view of the API server)
    def set_pods(self, model: str, pods: Mapping[str, bool]) -> None:
        """Every pod of `model` now, name -> Ready. A pod turning Ready starts an idle engine (fresh
        counters, as a new vLLM process); a pod that is no longer Ready or gone takes no new requests
        and its series disappear (in-flight requests are not counted further)."""
        with self._lock:
            t = self.now()
            m = self._models.setdefault(model, _Model(model))
            for name in [n for n in m.pods if n not in pods or not pods[n]]:
                if name not in pods:
                    del m.pods[name]
                else:
                    m.pods[name] = None
            for name, ready in pods.items():
                if ready and m.pods.get(name) is None:
                    m.pods[name] = self._new_pod(name, t)
                elif not ready:
                    m.pods.setdefault(name, None)
            self._route_held(m, t)

    def _new_pod(self, name: str, t: float) -> _Pod:
        self._seq += 1
        hist = [0] * (len(TTFT_BUCKETS) + 1)
        replica = Replica(self._seq, self.profile, _SINK, _SINK, hist)
        replica.state = "ready"
        replica.t = t
        return _Pod(name, replica, hist)

    # ------------------------------------------------------------------ demand
    def replay(self, model: str, arrival, prompt, output) -> None:
        """Feed requests of `model` at virtual times `arrival` (sorted seconds) from now on."""
        if not (len(arrival) == len(prompt) == len(output)):
            raise ValueError(f"replay: arrival, prompt and output lengths differ: {len(arrival)}, {len(prompt)}, {len(output)}")
        with self._lock:
            self._models.setdefault(model, _Model(model))
            self._replays.append([model, list(map(float, arrival)), list(map(int, prompt)), list(map(int, output)), 0])

    def replay_workload(self, workload) -> None:
        """Replay an `autoscaler.sim.traces.Workload` (its model name, arrivals and lengths)."""
        self.replay(workload.model, workload.arrival, workload.prompt, workload.output)

    def submit(self, model: str, prompt_tokens: int, output_tokens: int) -> None:
        """One request of `model` arriving now."""
        with self._lock:
            m = self._models.setdefault(model, _Model(model))
            self._arrive(m, self.now(), prompt_tokens, output_tokens)

    def _arrive(self, m: _Model, t: float, prompt: int, output: int) -> None:
        m.arrivals += 1
        if prompt + output > self._limit:
            m.dropped += 1          # vLLM rejects a request longer than the context or the KV cache
            return
        self._rid += 1
        req = Request(self._rid, t, prompt, output)
        ready = m.ready()
        if not ready:
            m.gateway.append(req)
            return
        pod = ready[m.rr % len(ready)]
        m.rr += 1
        pod.add(req, t + self.profile.engine.request_overhead_s)

    def _route_held(self, m: _Model, t: float) -> None:
        while m.gateway and m.gateway[0].arrival < t - self.gateway_timeout_s:
            m.gateway.popleft()
            m.dropped += 1
        ready = m.ready()
        while m.gateway and ready:
            req = m.gateway.popleft()
            pod = ready[m.rr % len(ready)]
            m.rr += 1
            pod.add(req, t)

    def _pump(self, model: str | None = None) -> None:
        """Deliver due arrivals and step the engines to now: every model's, or only `model`'s (models
        share nothing, so one pod's scrape need not step the other models' engines)."""
        with self._lock:
            t = self.now()
            for rep in self._replays:
                if model is not None and rep[0] != model:
                    continue
                name, arr, prm, out, i = rep
                m = self._models[name]
                while i < len(arr) and arr[i] <= t:
                    self._arrive(m, arr[i], prm[i], out[i])
                    i += 1
                rep[4] = i
            models = self._models.values() if model is None else [self._models[model]] if model in self._models else []
            for m in models:
                self._route_held(m, t)
                for pod in m.ready():
                    pod.advance(t)

    def replay_done(self) -> bool:
        with self._lock:
            return all(rep[4] >= len(rep[1]) for rep in self._replays)

    # ------------------------------------------------------------------ state
    def stats(self, model: str) -> dict[str, PodStats]:
        """Ready pod -> its engine state now."""
        with self._lock:
            self._pump(model)
            m = self._models.get(model)
            return {p.name: self._stats(p) for p in (m.ready() if m else [])}

    def held(self, model: str) -> int:
        with self._lock:
            m = self._models.get(model)
            return len(m.gateway) if m else 0

    def arrivals(self, model: str) -> int:
        with self._lock:
            m = self._models.get(model)
            return m.arrivals if m else 0

    def _stats(self, p: _Pod) -> PodStats:
        r = p.replica
        return PodStats(waiting=r.num_waiting(), running=r.num_running(), kv_cache_usage=r.kv_used() / r.kv_cap,
                        request_success=r.completed, prompt_tokens=p.prompt_tokens, generation_tokens=r.gen_tokens,
                        preemptions=r.preemptions)

    # ------------------------------------------------------------------ exposition
    def render(self, pod: str | None = None, engines: bool = True, router: bool = True) -> str:
        """Prometheus text: one pod's series, or every Ready pod's and the router's."""
        with self._lock:
            if pod is None:
                self._pump()
                pods = [(m, p) for m in self._models.values() for p in m.ready()]
            else:
                owner = next((m for m in self._models.values() if pod in m.pods), None)
                if owner is not None:
                    self._pump(owner.name)
                pods = [(owner, p) for p in owner.ready() if p.name == pod] if owner is not None else []
            families = self._engine_families(pods) if engines else []
            if router and pod is None:
                families += self._router_families()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        return generate_latest(registry).decode()

    def _engine_families(self, pods: list[tuple[_Model, _Pod]]) -> list:
        names = [MODEL_LABEL, "engine", POD_LABEL, NAMESPACE_LABEL]
        waiting = GaugeMetricFamily(NUM_REQUESTS_WAITING, "Number of requests waiting to be processed.", labels=names)
        running = GaugeMetricFamily(NUM_REQUESTS_RUNNING, "Number of requests in model execution batches.", labels=names)
        kv = GaugeMetricFamily(KV_CACHE_USAGE, "KV-cache usage. 1 means 100 percent usage.", labels=names)
        success = CounterMetricFamily(_family(REQUEST_SUCCESS), "Count of successfully processed requests.",
                                      labels=[*names, "finished_reason"])
        prompt = CounterMetricFamily(_family(PROMPT_TOKENS), "Number of prefill tokens processed.", labels=names)
        gen = CounterMetricFamily(_family(GENERATION_TOKENS), "Number of generation tokens processed.", labels=names)
        preempt = CounterMetricFamily(_family(NUM_PREEMPTIONS), "Cumulative number of preemption from the engine.",
                                      labels=names)
        ttft = HistogramMetricFamily(TIME_TO_FIRST_TOKEN, "Histogram of time to first token in seconds.", labels=names)
        for m, p in pods:
            s = self._stats(p)
            lv = [m.name, "0", p.name, self.namespace]
            waiting.add_metric(lv, s.waiting)
            running.add_metric(lv, s.running)
            kv.add_metric(lv, s.kv_cache_usage)
            success.add_metric([*lv, "length"], s.request_success)
            prompt.add_metric(lv, s.prompt_tokens)
            gen.add_metric(lv, s.generation_tokens)
            preempt.add_metric(lv, s.preemptions)
            cumulative, buckets = 0, []
            for le, count in zip((*TTFT_BUCKETS, math.inf), p.hist):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(le) else repr(float(le)), cumulative))
            ttft.add_metric(lv, buckets, sum_value=p.ttft_sum)
        return [waiting, running, kv, success, prompt, gen, preempt, ttft]

    def _router_families(self) -> list:
        arrivals = CounterMetricFamily(_family(ROUTER_ARRIVALS), "Requests that arrived at the router.",
                                       labels=[ROUTER_MODEL_LABEL])
        held = GaugeMetricFamily(ROUTER_HELD_REQUESTS, "Requests held, waiting for a Ready engine.",
                                 labels=[ROUTER_MODEL_LABEL])
        for m in self._models.values():
            arrivals.add_metric([m.name], m.arrivals)
            held.add_metric([m.name], len(m.gateway))
        return [arrivals, held]

    # ------------------------------------------------------------------ addresses
    @property
    def address(self) -> str:
        """host:port, for a Prometheus scrape target."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def pod_metrics_url(self, pod: str) -> str:
        return f"{self.url}/pods/{pod}/metrics"

    @property
    def metrics_url_template(self) -> str:
        """For `TemplateResolver` / the controller's --metrics-url-template."""
        return f"{self.url}/pods/{{namespace}}/{{name}}/metrics"

    @property
    def router_metrics_url(self) -> str:
        return f"{self.url}/router/metrics"

    def resolver(self) -> EmulatorResolver:
        return EmulatorResolver(self)

    def has_pod(self, name: str) -> bool:
        with self._lock:
            return any(name in m.pods for m in self._models.values())

    # ------------------------------------------------------------------ serving
    def _app(self) -> FastAPI:
        app = FastAPI(title="warmscale fleet emulator", docs_url=None, redoc_url=None, openapi_url=None)

        def text(body: str) -> Response:
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        @app.get("/metrics")
        def all_metrics() -> Response:
            return text(self.render())

        @app.get("/router/metrics")
        def router_metrics() -> Response:
            return text(self.render(engines=False))

        @app.get("/pods/{name}/metrics")
        def pod_metrics(name: str) -> Response:
            with self._lock:
                state = next((m.pods[name] for m in self._models.values() if name in m.pods), False)
            if state is False:
                return Response(f"no pod {name!r} in the emulator\n", status_code=404)
            if state is None:
                return Response(f"pod {name!r} is not Ready\n", status_code=503)
            return text(self.render(pod=name, router=False))

        @app.get("/pods/{namespace}/{name}/metrics")
        def namespaced_pod_metrics(namespace: str, name: str) -> Response:
            if namespace != self.namespace:
                return Response(f"no pod {name!r} in namespace {namespace!r} in the emulator\n", status_code=404)
            return pod_metrics(name)

        return app

    def start(self) -> FleetEmulator:
        """Serve HTTP and step the engines in background threads; returns once the server listens."""
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._wall0 = self.clock()
        serve = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                 name="emulator-http", daemon=True)
        pump = threading.Thread(target=self._pump_loop, name="emulator-pump", daemon=True)
        self._threads = [serve, pump]
        for th in self._threads:
            th.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not serve.is_alive():
                self.stop()
                raise RuntimeError(f"fleet emulator did not start serving on {self.address}")
            time.sleep(0.01)
        return self

    def _pump_loop(self) -> None:
        while not self._stop.wait(self.pump_s):
            self._pump()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for th in self._threads:
            th.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> FleetEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Families:
    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


@dataclass(frozen=True)
class EmulatorResolver:
    """`PodResolver` for emulated pods: the pod's path on the emulator (loopback), whatever its IP."""

    emulator: FleetEmulator

    def metrics_url(self, pod: PodRef) -> str | None:
        return self.emulator.pod_metrics_url(pod.name) if self.emulator.has_pod(pod.name) else None
