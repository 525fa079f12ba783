"""Deterministic discrete-event simulation of an LLM fleet driven by an autoscaling policy.

Pieces (all on one virtual clock, seconds on the trace's own clock):

* **Arrivals** from a `Workload` go to a gateway that routes round-robin over the model's Ready
  replicas (a Kubernetes Service / the vLLM production-stack router's default). With no Ready
  replica the gateway holds the request until one is Ready, or drops it after
  `gateway_timeout_s`. A request "waited on a cold start" if it was held so, or if it arrived
  while a scale-up of its model was still starting (or pending) and then missed the TTFT SLO:
  the capacity it needed was ordered but still loading. A request longer than `max_model_len` or than the KV cache
  is rejected at once (dropped), as vLLM does.
* **Replicas** are `engine.Replica` engines. Lifecycle: Pending (no GPU free in the budget) ->
  Starting (GPU held; scheduling + image pull + weight load + warm-up) -> Ready -> Draining (no
  new requests; finishes what it holds) -> gone. Scale-down removes Pending, then Starting, then
  Ready replicas, newest first (the ReplicaSet's order).
* **Metrics** come as production exposes them (`autoscaler.sim.sensing`): vLLM's per-pod series
  (finished requests, prompt tokens at prefill, waiting/running as the engine counts them) and the
  router's arrivals and held requests, read through Prometheus (15 s scrapes with jitter and
  missed scrapes, answers 15 s late, `rate()` with its extrapolation) or by direct 1 s scrapes.
* **Control**: every `policy.interval_s` the policy gets an `Observation` and its `Decision.desired`
  is applied at once (replica counts come fresh from the API server, not lagged). With
  `SimConfig.activator` (the default), a request held for a model with nothing Ready, starting or
  pending also makes a policy that ships behind an activator (`has_activator`) decide for that
  model at once, as Knative's activator pokes its autoscaler and warmscale's router wakes its loop.
* **GPU budget**: at most `gpu_budget` GPUs held at once by all models together.
* **Nodes and cold-start tiers** (only with `SimConfig.nodes`; `autoscaler.sim.nodes`): GPUs live on
  nodes with state (image present, weights staged, engines asleep); a start lands on the warmest
  node first and takes that tier's cold start (`ColdStart.tier_s`); a scaled-down engine may sleep
  on its node, holding (and being charged for) its GPUs, and wake in place for the next scale-up.
  Without `nodes` every start takes the profile's one number (`ColdStart.total_s`).

Outputs a `SimResult` per model: SLO attainment, TTFT percentiles, GPU-hours, cold-start waits,
scale events, idle GPU share, a timeline for plots. Given the same inputs and seed, a run is
bit-for-bit the same (no wall clock, no hash-order dependence).
"""
from __future__ import annotations

import heapq
import math
import time as _time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from autoscaler.policy.types import Observation
from autoscaler.sim.engine import TTFT_BUCKETS, Replica, Request
from autoscaler.sim.nodes import Node, NodeFleet, effective_tier
from autoscaler.sim.prewarm import forecast_of
from autoscaler.sim.results import SimResult, summarize
from autoscaler.sim.sensing import SensingConfig, Sensor, hist_quantile as _hist_quantile

__all__ = ["SimConfig", "ModelSpec", "Simulation", "simulate", "ACTIVATED_POLICIES", "has_activator"]

# Policies whose production deployment holds requests at zero and asks the autoscaler to decide at
# once (not at its next tick):
# - warmscale: its router wakes the local loop for a model it starts holding (autoscaler/local/runner.py);
# - knative: the activator sends the held request's stat to the autoscaler, whose multiscaler
#   `Poke`s a revision's scaler at once when it is at zero (knative/serving pkg/autoscaler/scaling/
#   multiscaler.go). KEDA's HTTP add-on holds requests too and pushes activity to KEDA (an
#   external-push scaler), but the `keda` peer here is the Prometheus scaler vLLM's production stack
#   ships, polled every pollingInterval, with no component holding requests; HPA and AIBrix never
#   scale from zero.
ACTIVATED_POLICIES = frozenset({"warmscale", "knative"})


def has_activator(policy) -> bool:
    """Whether `policy` ships behind an activator: its own `activator` attribute when it has one,
    else its name in ACTIVATED_POLICIES."""
    own = getattr(policy, "activator", None)
    return bool(own) if own is not None else getattr(policy, "name", None) in ACTIVATED_POLICIES

# event kinds (ordering among simultaneous events: ready before scrape before tick)
_READY, _SCRAPE, _TICK, _HORIZON, _SLEEP_END = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SimConfig:
    sensing: SensingConfig = field(default_factory=SensingConfig)   # how the controller reads the fleet
    gpu_budget: int | None = None        # GPUs shared by all models; None = unlimited
    gateway_timeout_s: float = 600.0     # a request held for a cold start longer than this is dropped
    drain_after_end_s: float = 3600.0    # after the trace ends, finish in-flight work for at most this long
    initial_replicas: int | dict[str, int] | None = None  # Ready at the start; None: sized to the first minute
    timeline_interval_s: float = 60.0    # resolution of the timeline kept for plots
    min_replicas: int = 0                # floor applied to every decision (0: policy decides alone)
    nodes: NodeFleet | None = None       # GPU nodes with state and cold-start tiers; None: one cold-start number
    # The activator: a request the gateway holds for a model with nothing Ready, starting or pending
    # makes the policy decide for that model at once, out of schedule, on an Observation carrying
    # the gateway's held count (the poke); the decision goes through the same stages as a tick and
    # the tick schedule goes on. Only for policies that ship behind an activator (`has_activator`):
    # warmscale's router, Knative's activator; and only with a router (`sensing.router`). False:
    # every policy decides on its schedule only.
    activator: bool = True


@dataclass
class ModelSpec:
    workload: object                    # traces.Workload
    policy: object                      # autoscaler.policy.types.Policy (or OraclePolicy)
    profile: object                     # profile.EngineProfile


@dataclass
class _Model:
    name: str
    spec: ModelSpec
    idx: int
    policy: object
    profile: object
    n0: int                              # first rid of this model
    n: int
    ready: list = field(default_factory=list)
    starting: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    draining: list = field(default_factory=list)
    gone: list = field(default_factory=list)
    gateway: deque = field(default_factory=deque)
    rr: int = 0
    arrivals: int = 0
    prompt_tokens: int = 0
    gen_gone: int = 0
    hist: list = field(default_factory=list)
    scale_up_events: int = 0
    scale_down_events: int = 0
    decisions: Counter = field(default_factory=Counter)
    timeline: dict = field(default_factory=lambda: {k: [] for k in (
        "t", "demand_rps", "ready", "loading", "draining", "desired", "waiting", "kv")})
    last_desired: int = 0
    last_arrivals_tl: int = 0
    last_t_tl: float = 0.0
    replica_seq: int = 0
    peak_replicas: int = 0
    horizon: dict | None = None
    sensor: Sensor | None = None
    tier_starts: Counter = field(default_factory=Counter)
    activator: bool = False              # held requests poke the policy (SimConfig.activator and has_activator)
    pokes: int = 0                       # out-of-band decisions the activator asked for

    def active(self):
        return self.ready + self.draining


class Simulation:
    """Run one or more models (each a workload + a policy) on a shared fleet.

    `prewarm`: optional forecast hook (see `autoscaler.sim.prewarm`). `progress`: optional
    callable(fraction_done) called now and then.
    """

    def __init__(self, models: list[ModelSpec] | ModelSpec, config: SimConfig | None = None, prewarm=None,
                 progress=None, seed: int = 0):
        if isinstance(models, ModelSpec):
            models = [models]
        if not models:
            raise ValueError("models: at least one ModelSpec is needed")
        names = [m.workload.model for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: each model name must appear once, got {names}")
        self.config = config or SimConfig()
        self.prewarm = prewarm
        self.progress = progress
        self.seed = seed
        self.models: list[_Model] = []
        n0 = 0
        for i, spec in enumerate(models):
            w = spec.workload
            self.models.append(_Model(w.model, spec, i, spec.policy, spec.profile, n0, len(w),
                                      hist=[0] * (len(TTFT_BUCKETS) + 1),
                                      sensor=Sensor(self.config.sensing, w.model, spec.profile, seed * 1000 + i)))
            # the activator is the router: a fleet behind a plain Service (sensing.router False) has none
            self.models[-1].activator = (self.config.activator and self.config.sensing.router
                                         and has_activator(spec.policy))
            n0 += len(w)
        self.total = n0
        self.first = np.full(n0, np.nan)
        self.done = np.full(n0, np.nan)
        self.dropped = np.zeros(n0, dtype=np.int8)    # 1 rejected (too long), 2 gateway timeout, 3 unfinished
        self.cold = np.zeros(n0, dtype=bool)
        self.behind_scale_up = np.zeros(n0, dtype=bool)
        self.start_s = min(m.spec.workload.start_s for m in self.models)
        self.end_s = max(m.spec.workload.end_s for m in self.models)
        self.gpus_used = 0
        self.pending_fifo: deque = deque()
        self.events: list = []
        self._seq = 0
        self.now = self.start_s
        self.ran = False
        fleet = self.config.nodes
        self.fleet = fleet
        self.nodes: list[Node] = []
        if fleet is not None:
            names_all = [m.name for m in self.models]
            for k in range(fleet.nodes):
                node = Node(k, fleet.gpus_per_node, fleet.gpus_per_node, fleet.image_cached)
                if fleet.prestage:
                    for nm in names_all:
                        node.stage(nm, fleet.staged_per_node)
                self.nodes.append(node)

    # ------------------------------------------------------------------ events
    def _push(self, t: float, kind: int, payload) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, kind, self._seq, payload))

    # ------------------------------------------------------------------ replicas
    def _new_replica(self, m: _Model, t: float) -> Replica:
        m.replica_seq += 1
        r = Replica(m.replica_seq, m.profile, self.first, self.done, m.hist)
        r.created = t
        r.state = "pending"
        if self.nodes:
            if not self._place(m, r, t):
                m.pending.append(r)
                self.pending_fifo.append((m, r))
            return r
        budget = self.config.gpu_budget
        gpr = m.profile.gpus_per_replica
        if budget is None or self.gpus_used + gpr <= budget:
            self._start(m, r, t)
        else:
            m.pending.append(r)
            self.pending_fifo.append((m, r))
        return r

    def _start(self, m: _Model, r: Replica, t: float) -> None:
        self.gpus_used += m.profile.gpus_per_replica
        r.gpu_start = t
        r.state = "starting"
        m.starting.append(r)
        self._push(t + m.profile.cold_start.total_s, _READY, (m, r))

    # ------------------------------------------------------------------ nodes (SimConfig.nodes)
    def _sleeps(self, m: _Model) -> bool:
        tiers = m.profile.cold_start.tiers
        return self.fleet is not None and self.fleet.sleep_s > 0 and tiers is not None and "asleep" in tiers

    def _place(self, m: _Model, r: Replica, t: float) -> bool:
        """Start `r` on the warmest place for its model; False when no GPU can be had (it stays Pending)."""
        gpr = m.profile.gpus_per_replica
        # 1. an engine of this model asleep on a node: wake it in place (its GPUs are held already)
        best = None
        for node in self.nodes:
            for k, (sm, sr) in enumerate(node.asleep):
                if sm is m and (best is None or sr.gone_at < best[2].gone_at):
                    best = (node, k, sr)
        if best is not None:
            node, k, sr = best
            node.asleep.pop(k)
            sr.state = "gone"
            sr.gpu_end = t           # the GPUs pass to the woken engine from here on
            self._begin(m, r, t, node, "asleep")
            return True
        budget = self.config.gpu_budget
        if budget is not None and self.gpus_used + gpr > budget and not self._evict_for(m, gpr, t, budget_only=True):
            return False
        node = self._warmest_free(m, gpr)
        if node is None:
            if not self._evict_for(m, gpr, t):
                return False
            node = self._warmest_free(m, gpr)
            if node is None:
                return False
        node.free -= gpr
        self.gpus_used += gpr
        self._begin(m, r, t, node, node.tier_for(m.name))
        return True

    _RANK = {"cold": 0, "image": 1, "staged": 2}

    def _warmest_free(self, m: _Model, gpr: int):
        """The node with free GPUs where a start of `m` is shortest by the profile's tiers (then the
        warmer state, then the lowest index)."""
        best = None
        cs = m.profile.cold_start
        for node in self.nodes:
            if node.free < gpr:
                continue
            tier = node.tier_for(m.name)
            key = (cs.tier_s(effective_tier(m.profile, tier)), -self._RANK[tier])
            if best is None or key < best[0]:
                best = (key, node)
        return None if best is None else best[1]

    def _evict_for(self, m: _Model, gpr: int, t: float, budget_only: bool = False) -> bool:
        """Make room for a start of `m` by ending the longest-asleep engines of other models."""
        budget = self.config.gpu_budget
        while True:
            if budget_only:
                if self.gpus_used + gpr <= budget:
                    return True
            elif self._warmest_free(m, gpr) is not None:
                return True
            cands = [(sr.gone_at, node.idx, k) for node in self.nodes for k, (sm, sr) in enumerate(node.asleep)
                     if sm is not m]
            if not cands:
                return False
            _, ni, k = min(cands)
            node = self.nodes[ni]
            sm, sr = node.asleep.pop(k)
            self._exit(sm, sr, t, node)

    def _begin(self, m: _Model, r: Replica, t: float, node: Node, tier: str) -> None:
        tier = effective_tier(m.profile, tier)
        r.gpu_start = t
        r.state = "starting"
        r.node = node
        r.tier = tier
        m.starting.append(r)
        m.tier_starts[tier] += 1
        fleet = self.fleet
        if fleet.keep_image:
            node.image = True
        if fleet.keep_weights:
            node.stage(m.name, fleet.staged_per_node)
        self._push(t + m.profile.cold_start.tier_s(tier), _READY, (m, r))

    def _exit(self, m: _Model, r: Replica, t: float, node: Node) -> None:
        """An engine leaves its node for good: its GPUs are free from `t`."""
        r.state = "gone"
        r.gpu_end = t
        gpr = m.profile.gpus_per_replica
        node.free += gpr
        self.gpus_used -= gpr
        self._serve_pending(t)

    def _sleep_end(self, m: _Model, r: Replica, t: float) -> None:
        node = r.node
        for k, (sm, sr) in enumerate(node.asleep):
            if sr is r:
                node.asleep.pop(k)
                self._exit(m, r, t, node)
                return

    def _serve_pending(self, t: float) -> None:
        while self.pending_fifo:
            pm, pr = self.pending_fifo[0]
            if pr.state != "pending":
                self.pending_fifo.popleft()
                continue
            if not self._place(pm, pr, t):
                break
            self.pending_fifo.popleft()
            pm.pending.remove(pr)

    def _make_ready(self, m: _Model, r: Replica, t: float) -> None:
        r.state = "ready"
        r.ready_at = t
        r.t = t
        r.busy_mark = r.busy_s
        m.starting.remove(r)
        m.ready.append(r)
        if m.gateway:
            gw = m.gateway
            ready = m.ready
            while gw:
                req = gw.popleft()
                rep = ready[m.rr % len(ready)]
                m.rr += 1
                rep.advance(t)
                rep.add(req, t)

    def _release(self, m: _Model, r: Replica, t: float, may_sleep: bool = True) -> None:
        if self.nodes:
            m.gen_gone += r.gen_tokens
            m.gone.append(r)
            r.gone_at = t
            if may_sleep and self._sleeps(m):
                r.state = "asleep"      # holds its GPUs (and is charged for them) until it wakes, exits or is evicted
                r.node.asleep.append((m, r))
                self._push(t + self.fleet.sleep_s, _SLEEP_END, (m, r))
            else:
                self._exit(m, r, t, r.node)
            return
        r.state = "gone"
        r.gpu_end = t
        self.gpus_used -= m.profile.gpus_per_replica
        m.gen_gone += r.gen_tokens
        m.gone.append(r)
        budget = self.config.gpu_budget
        while self.pending_fifo:
            pm, pr = self.pending_fifo[0]
            if pr.state != "pending":
                self.pending_fifo.popleft()
                continue
            if budget is not None and self.gpus_used + pm.profile.gpus_per_replica > budget:
                break
            self.pending_fifo.popleft()
            pm.pending.remove(pr)
            self._start(pm, pr, t)

    def _drain(self, m: _Model, r: Replica, t: float) -> None:
        m.ready.remove(r)
        r.state = "draining"
        r.advance(t)
        if r.idle():
            self._release(m, r, t)
        else:
            m.draining.append(r)

    def _check_drains(self, m: _Model, t: float) -> None:
        if not m.draining:
            return
        keep = []
        for r in m.draining:
            r.advance(t)
            if r.idle():
                self._release(m, r, min(max(r.t, r.ready_at), t))
            else:
                keep.append(r)
        m.draining = keep

    def _apply(self, m: _Model, desired: int, t: float) -> None:
        current = len(m.ready) + len(m.starting) + len(m.pending)
        if desired > current:
            m.scale_up_events += 1
            for _ in range(desired - current):
                self._new_replica(m, t)
        elif desired < current:
            m.scale_down_events += 1
            k = current - desired
            while k and m.pending:
                r = m.pending.pop()
                r.state = "cancelled"
                k -= 1
            while k and m.starting:
                r = m.starting.pop()
                self._release(m, r, t, may_sleep=False)
                k -= 1
            while k and m.ready:
                self._drain(m, m.ready[-1], t)
                k -= 1
        m.peak_replicas = max(m.peak_replicas, len(m.ready) + len(m.starting) + len(m.draining))

    # ------------------------------------------------------------------ metrics
    def _scrape(self, m: _Model, t: float) -> None:
        for r in m.ready:
            r.advance(t)
        self._check_drains(m, t)
        cfg = self.config
        while m.gateway and m.gateway[0].arrival < t - cfg.gateway_timeout_s:
            req = m.gateway.popleft()
            self.dropped[req.rid] = 2
        m.sensor.scrape(t, m.ready, m.arrivals, len(m.gateway), m.hist)
        if t - m.last_t_tl >= cfg.timeline_interval_s - 1e-9 or not m.timeline["t"]:
            tl = m.timeline
            span = t - m.last_t_tl if tl["t"] else cfg.sensing.interval
            tl["t"].append(t)
            tl["demand_rps"].append((m.arrivals - m.last_arrivals_tl) / span if span > 0 else 0.0)
            tl["ready"].append(len(m.ready))
            tl["loading"].append(len(m.starting) + len(m.pending))
            tl["draining"].append(len(m.draining))
            tl["desired"].append(m.last_desired)
            tl["waiting"].append(sum(len(r.waiting) for r in m.ready) + len(m.gateway))
            kv = (sum(r.kv_used() for r in m.ready) / (len(m.ready) * m.profile.engine.kv_cache_tokens)
                  if m.ready else 0.0)
            tl["kv"].append(kv)
            m.last_arrivals_tl = m.arrivals
            m.last_t_tl = t

    def _observe(self, m: _Model, t: float) -> Observation:
        return m.sensor.observe(t, len(m.ready), len(m.starting) + len(m.pending))

    def _tick(self, m: _Model, t: float, poked: bool = False) -> None:
        """One decision for `m` at `t`: on its schedule, or out of it when the activator pokes."""
        obs = self._observe(m, t)
        if poked:
            # the poke carries what the gateway holds now (the scraped gauge may not show it yet)
            obs = _replace(obs, held_requests=float(len(m.gateway)))
        pw = self.prewarm
        if pw is not None:
            demand = obs.arrival_rate if obs.arrival_rate is not None else obs.request_rate
            if demand is not None and not poked:   # the forecaster's history keeps the tick's spacing
                pw.observe(m.name, t, demand, obs.prompt_token_rate or 0.0, obs.generation_token_rate or 0.0)
            floor = pw.floor(m.name, t)
            fc = forecast_of(pw, m.name, t)
            if floor is not None or fc is not None:
                obs = _replace(obs, floor=floor, forecast=fc)
        decision = m.policy.decide(obs)
        desired = max(int(decision.desired), self.config.min_replicas, 0)
        m.decisions[str(decision.reason)] += 1
        m.last_desired = desired
        self._apply(m, desired, t)

    # ------------------------------------------------------------------ run
    def run(self) -> list[SimResult]:
        if self.ran:
            raise RuntimeError("a Simulation runs once; build a new one")
        self.ran = True
        wall0 = _time.perf_counter()
        cfg = self.config
        t0 = self.start_s
        # initial fleet: Ready at t0
        for m in self.models:
            n_init = cfg.initial_replicas
            if isinstance(n_init, dict):
                n_init = n_init.get(m.name)
            if n_init is None:   # a fixed-size policy (or a replayed plan) starts at its size; others at the
                n_init = getattr(m.policy, "fixed_replicas", None)   # first minute's need
            if n_init is None:
                n_init = getattr(m.policy, "initial_replicas", None)
            if n_init is None:
                n_init = _first_minute_need(m.spec.workload, m.profile)
            for _ in range(int(n_init)):
                r = self._new_replica(m, t0)
                if r.state == "starting":
                    self._make_ready(m, r, t0)
            m.last_desired = int(n_init)
            m.tier_starts.clear()    # the starting fleet is there already: not a start
            m.last_t_tl = t0
            m.peak_replicas = len(m.ready)
        # clear the READY events of the initial replicas (they are Ready already)
        self.events = [e for e in self.events if not (e[1] == _READY and e[3][1].state != "starting")]
        heapq.heapify(self.events)
        for m in self.models:
            self._push(t0, _SCRAPE, (m, t0))
            self._push(t0 + m.policy.interval_s, _TICK, m)
        self._push(self.end_s, _HORIZON, None)

        # merged arrival stream
        if len(self.models) == 1:
            w = self.models[0].spec.workload
            arr_t = w.arrival.tolist()
            arr_p = w.prompt.tolist()
            arr_o = w.output.tolist()
            arr_m = None
        else:
            t_all = np.concatenate([m.spec.workload.arrival for m in self.models])
            order = np.argsort(t_all, kind="stable")
            arr_t = t_all[order].tolist()
            arr_p = np.concatenate([m.spec.workload.prompt for m in self.models])[order].tolist()
            arr_o = np.concatenate([m.spec.workload.output for m in self.models])[order].tolist()
            arr_m = np.concatenate([np.full(m.n, m.idx) for m in self.models])[order].tolist()
        rid_next = [m.n0 for m in self.models]
        N = len(arr_t)
        events = self.events
        models = self.models
        heappop = heapq.heappop
        dropped = self.dropped
        cold = self.cold
        behind_scale_up = self.behind_scale_up
        limits = [(min(m.profile.engine.max_model_len, m.profile.engine.kv_cache_tokens)) for m in models]
        overheads = [m.profile.engine.request_overhead_s for m in models]
        progress = self.progress
        prog_every = max(1, N // 200)
        m0 = models[0]
        i = 0
        inf = math.inf
        while True:
            ta = arr_t[i] if i < N else inf
            te = events[0][0] if events else inf
            if ta < te or (ta == te and ta != inf):
                mi = 0 if arr_m is None else arr_m[i]
                m = m0 if arr_m is None else models[mi]
                rid = rid_next[mi]
                rid_next[mi] = rid + 1
                p = arr_p[i]
                o = arr_o[i]
                i += 1
                m.arrivals += 1
                m.prompt_tokens += p
                if p + o > limits[mi]:
                    dropped[rid] = 1
                    continue
                req = Request(rid, ta, p, o)
                ready = m.ready
                if ready:
                    if m.starting or m.pending:
                        behind_scale_up[rid] = True
                    rep = ready[m.rr % len(ready)]
                    m.rr += 1
                    tr = ta + overheads[mi]   # when the scheduler sees it
                    rep.advance(tr)
                    if not (rep.B or rep.prefill or rep.waiting) and rep.t < tr:
                        rep.t = tr
                    rep.waiting.append(req)
                else:
                    cold[rid] = True
                    m.gateway.append(req)
                    if m.activator and not m.starting and not m.pending:
                        m.pokes += 1
                        self._tick(m, ta, poked=True)
                if progress is not None and i % prog_every == 0:
                    progress(i / N)
                continue
            if te == inf:
                break
            t, kind, _, payload = heappop(events)
            self.now = t
            if kind == _READY:
                pm, r = payload
                if r.state == "starting":
                    self._make_ready(pm, r, t)
            elif kind == _SCRAPE:
                sm, slot = payload
                self._scrape(sm, t)
                slot, nt = sm.sensor.next_scrape(slot)
                if nt <= self.end_s:
                    self._push(nt, _SCRAPE, (sm, slot))
            elif kind == _TICK:
                self._tick(payload, t)
                nt = t + payload.policy.interval_s
                if nt <= self.end_s:
                    self._push(nt, _TICK, payload)
            elif kind == _SLEEP_END:
                sm, sr = payload
                if sr.state == "asleep":
                    self._sleep_end(sm, sr, t)
            else:
                self._horizon(t)
        # after the trace: finish in-flight work on the fleet as it is
        t_stop = self.end_s + cfg.drain_after_end_s
        for m in models:
            for r in m.ready + m.draining:
                r.advance(t_stop)
            for req in m.gateway:
                dropped[req.rid] = 2
            m.gateway.clear()
        unfinished = np.isnan(self.done) & (dropped == 0)
        dropped[unfinished] = 3
        if progress is not None:
            progress(1.0)
        wall = _time.perf_counter() - wall0
        return [summarize(self, m, wall) for m in models]

    def _horizon(self, t: float) -> None:
        """At the end of the trace: freeze GPU-seconds and busy seconds of every replica."""
        for m in self.models:
            for r in m.ready + m.draining:
                r.advance(t)
            self._check_drains(m, t)
            gpu_s = 0.0
            busy_s = 0.0
            for r in m.ready + m.starting + m.draining + m.gone:
                if r.gpu_start < 0:
                    continue
                end = r.gpu_end if r.state == "gone" else t
                gpu_s += max(0.0, min(end, t) - max(r.gpu_start, self.start_s))
                busy_s += r.busy_s
            m.horizon = {"gpu_s": gpu_s, "busy_s": min(busy_s, gpu_s),
                         "preemptions": sum(r.preemptions for r in m.ready + m.draining + m.gone)}


def _replace(obs: Observation, **kw) -> Observation:
    from dataclasses import replace

    return replace(obs, **kw)


def _first_minute_need(workload, profile) -> int:
    from autoscaler.sim.oracle import first_minute_need

    return first_minute_need(workload, profile)


def simulate(workload, policy, profile, config: SimConfig | None = None, prewarm=None, progress=None,
             seed: int = 0) -> SimResult:
    """Run one model; return its result."""
    return Simulation([ModelSpec(workload, policy, profile)], config, prewarm, progress, seed).run()[0]
