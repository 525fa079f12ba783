"""The warm-pool planner: which checkpoints to stage on which nodes, from the demand forecast.

A replica that starts on a node whose warm pool holds its checkpoint pays the staged tier's cold
start instead of the object-storage one; every node has room for only some checkpoints. The planner
places copies of checkpoints on nodes to maximise the cold-start seconds they are expected to save
over the next ``horizon_s``, within each node's budget, without churning what is already staged.

**Value of a copy.** For model m with P90 request rate lambda over the horizon H (the mean of its
forecasts' P90 inside the horizon), the expected starts are

    starts = lambda H exp(-lambda g)  +  max(0, peak - current)

The first term counts scale-ups from zero: a model scaled to zero after ``idle_grace_s`` (g) of no
traffic starts again at the next arrival, i.e. once per inter-arrival gap longer than g, and a
Poisson stream at rate lambda has lambda H exp(-lambda g) of those in H (a sparse model starts at
nearly every request, a busy one almost never scales to zero). The second counts replicas added
to reach the forecast peak (``ceil(max P90 rate / requests_per_replica)``) from those running now.
Starts land on the warmest node (the simulator's rule, and what preferred node affinity asks the
scheduler for), so the first ``n`` copies of a model, where ``n`` nodes are needed to hold its peak
(``ceil(peak x gpus_per_replica / gpus per node)``, at least 1), share its starts:

    value(copy k <= n) = saving_s x starts / n
    value(copy k > n)  = saving_s x starts / n x busy^(k - n)

where ``saving_s`` is the model's object-storage cold start minus its staged one, and a copy beyond
``n`` saves time only when the staged nodes before it have no free GPU (probability ``busy`` each).
Unless ``busy_probability`` is set, ``busy`` comes from the forecast: with ``u`` the share of the
fleet's GPUs the forecast peaks fill (every model's peak replicas x GPUs over all nodes' GPUs, an
upper bound: peaks need not coincide, capped at 0.95), a node is full when all its GPUs are busy,
``busy = u ^ (GPUs per node)`` if each is busy with chance ``u``. A fleet with room to spare (a long
tail at zero most of the time) then stages one copy of more models instead of second copies of a few
(bench/results/warmpool_plan.md).

**Placement: greedy by value density** (seconds saved per byte of budget), each copy to the node
with the most room left. Why greedy: the exact problem is a multiple knapsack (NP-hard); greedy by
density is optimal for its fractional relaxation and loses little when checkpoints are small
against node budgets (tens of GB against hundreds), which is the case it is built for; it is
deterministic, runs in milliseconds for hundreds of models x nodes, and every placement comes with
its value, so the plan can be explained. A checkpoint larger than every node's budget is reported,
never placed.

**Stickiness.** A copy already staged ranks at ``(1 + stickiness)`` x its density and keeps its node
(no download); its space is reserved for it until its turn, so a newcomer takes it only when no
node has free room and the newcomer is worth more than ``(1 + stickiness)`` x what it displaces per
byte. Re-planning unchanged demand therefore keeps the plan as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median

from pydantic import BaseModel, ConfigDict, Field, field_validator

from forecasting.types import DemandForecast

__all__ = ["WarmPoolNode", "WarmPoolModel", "WarmPoolConfig", "ModelDemand", "Placement", "WarmPoolPlan",
           "demand_from_forecasts", "plan_warm_pool", "to_bytes"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def to_bytes(value: object) -> object:
    """Sizes may be written "200GB" or "64GiB" (the loader's size syntax) as well as in bytes."""
    if isinstance(value, str):
        import argparse

        from loader.cli import parse_size

        try:
            return parse_size(value)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from exc
    return value


class WarmPoolNode(_Strict):
    """A node's warm-pool budget."""

    name: str = Field(min_length=1)
    disk_bytes: int = Field(ge=0, description="room for the warm pool on the node's disk (NVMe)")
    memory_bytes: int | None = Field(
        None, ge=0, description="host memory for the warm pool when it lives in RAM (/dev/shm); both budgets bind")
    gpus: int = Field(8, ge=1, description="GPUs on the node (how many nodes a model's peak needs)")

    _sizes = field_validator("disk_bytes", "memory_bytes", mode="before")(to_bytes)

    @property
    def budget_bytes(self) -> int:
        return self.disk_bytes if self.memory_bytes is None else min(self.disk_bytes, self.memory_bytes)


class WarmPoolModel(_Strict):
    """A model the warm pool may stage."""

    name: str = Field(min_length=1)
    location: str = Field(min_length=1, description="where the checkpoint lives (s3://bucket/prefix, ...)")
    bytes: int = Field(gt=0, description="checkpoint size")
    saving_s: float = Field(gt=0, description="cold start from object storage minus cold start from the warm pool")
    gpus_per_replica: int = Field(1, ge=1)
    requests_per_replica: float | None = Field(None, gt=0, description="req/s one replica serves (peak replicas)")
    scale_to_zero: bool = True
    idle_grace_s: float = Field(300.0, ge=0, description="idle time before the model scales to zero")

    _sizes = field_validator("bytes", mode="before")(to_bytes)


class WarmPoolConfig(_Strict):
    """The fleet the planner places checkpoints on, and how it values and keeps copies."""

    horizon_s: float = Field(3600.0, gt=0, description="how far ahead the plan looks")
    stickiness: float = Field(0.5, ge=0, description="a staged copy counts (1 + stickiness) x against newcomers")
    busy_probability: float | None = Field(
        None, ge=0, lt=1,
        description="chance that a staged node has no free GPU for a start (default: from the forecast peaks)")
    max_copies: int | None = Field(None, ge=1, description="copies of one model at most (default: one per node)")
    nodes: list[WarmPoolNode] = Field(min_length=1)
    models: list[WarmPoolModel] = Field(default_factory=list)

    @field_validator("nodes", "models")
    @classmethod
    def _unique(cls, items: list) -> list:
        names = [i.name for i in items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"names must be unique, listed more than once: {twice}")
        return items


@dataclass(frozen=True)
class ModelDemand:
    """Expected starts of one model over the horizon, and the replicas it peaks at."""

    model: str
    starts: float
    peak_replicas: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Placement:
    """One copy of a model on a node."""

    model: str
    node: str
    copy: int
    bytes: int
    value_s: float
    kept: bool          # already staged there (no download)


@dataclass
class WarmPoolPlan:
    """The plan: what each node stages, the value of each copy, what was left out and why."""

    nodes: dict[str, list[str]]
    placements: list[Placement]
    unplaced: dict[str, str]
    dropped: dict[str, list[str]]       # node -> models staged now that the plan no longer keeps there
    used_bytes: dict[str, int]
    demand: dict[str, ModelDemand] = field(default_factory=dict)

    @property
    def value_s(self) -> float:
        return sum(p.value_s for p in self.placements)

    def to_json(self) -> dict[str, object]:
        return {
            "nodes": self.nodes, "value_s": round(self.value_s, 3), "used_bytes": self.used_bytes,
            "placements": [{"model": p.model, "node": p.node, "copy": p.copy, "bytes": p.bytes,
                            "value_s": round(p.value_s, 3), "kept": p.kept} for p in self.placements],
            "unplaced": self.unplaced, "dropped": self.dropped,
            "demand": {m: {"starts": round(d.starts, 4), "peak_replicas": d.peak_replicas, "detail": d.detail}
                       for m, d in self.demand.items()},
        }

    def document(self, config: WarmPoolConfig, generated_at: float | None = None) -> dict[str, object]:
        """The plan document the warm-pool DaemonSet reads (`loader.warmplan.WarmPlan`), as a dict."""
        from loader.warmplan import PLAN_VERSION, WarmPlan

        placed = {m for names in self.nodes.values() for m in names}
        doc = WarmPlan(
            version=PLAN_VERSION, generated_at=generated_at,
            models={m.name: {"location": m.location, "bytes": m.bytes} for m in config.models if m.name in placed},
            nodes=self.nodes,
        )
        return doc.model_dump(mode="json")


def demand_from_forecasts(model: WarmPoolModel, forecasts: Iterable[DemandForecast], now: float, horizon_s: float,
                          current_replicas: int = 0) -> ModelDemand:
    """Expected starts of `model` over `[now, now + horizon_s]` from its P90 forecasts inside that span
    (see the module docstring). No forecast in the span: no expected starts."""
    rates = [f.request_rate_p90 for f in forecasts if f.model == model.name and now <= f.target_time <= now + horizon_s]
    for r in rates:
        if not math.isfinite(r) or r < 0:
            raise ValueError(f"forecast for {model.name}: request_rate_p90 must be a finite rate >= 0, got {r!r}")
    if not rates:
        return ModelDemand(model.name, 0.0, 0, "no forecast inside the horizon")
    lam = sum(rates) / len(rates)
    from_zero = lam * horizon_s * math.exp(-lam * model.idle_grace_s) if model.scale_to_zero else 0.0
    peak = math.ceil(round(max(rates) / model.requests_per_replica, 9)) if model.requests_per_replica else 0
    growth = max(0, peak - current_replicas)
    return ModelDemand(model.name, from_zero + growth, peak,
                       f"p90 {lam:.3g} req/s: {from_zero:.3g} starts from zero + {growth} to reach {peak} replicas")


@dataclass(frozen=True)
class _Item:
    model: WarmPoolModel
    copy: int
    value_s: float
    kept: bool

    def key(self, stickiness: float) -> tuple:
        density = self.value_s / self.model.bytes * ((1 + stickiness) if self.kept else 1.0)
        return (-density, self.model.name, self.copy)


def _copies_needed(model: WarmPoolModel, demand: ModelDemand, node_gpus: float) -> int:
    return max(1, math.ceil(demand.peak_replicas * model.gpus_per_replica / node_gpus))


def _items(config: WarmPoolConfig, demand: Mapping[str, ModelDemand], current: Mapping[str, Sequence[str]],
           unplaced: dict[str, str]) -> list[_Item]:
    largest = max(n.budget_bytes for n in config.nodes)
    node_gpus = median(n.gpus for n in config.nodes)
    busy = config.busy_probability
    if busy is None:
        busy = _busy(config, demand, node_gpus)
    max_copies = min(config.max_copies or len(config.nodes), len(config.nodes))
    items = []
    for model in config.models:
        d = demand.get(model.name, ModelDemand(model.name, 0.0))
        if model.bytes > largest:
            unplaced[model.name] = (f"checkpoint of {model.bytes} bytes is larger than every node's budget "
                                    f"(largest {largest} bytes)")
            continue
        if d.starts <= 0:
            unplaced[model.name] = f"no expected cold starts within {config.horizon_s:g} s ({d.detail or 'no demand'})"
            continue
        staged_on = sum(1 for names in current.values() if model.name in names)
        n = _copies_needed(model, d, node_gpus)
        for k in range(1, max_copies + 1):
            value = model.saving_s * d.starts / n * (busy ** max(0, k - n))
            if value <= 0:
                break
            items.append(_Item(model, k, value, kept=k <= staged_on))
    return sorted(items, key=lambda i: i.key(config.stickiness))


def _busy(config: WarmPoolConfig, demand: Mapping[str, ModelDemand], node_gpus: float) -> float:
    """Chance that a node has no free GPU: each of its GPUs busy with the share the forecast peaks fill."""
    gpus = {m.name: m.gpus_per_replica for m in config.models}
    used = sum(d.peak_replicas * gpus.get(name, 1) for name, d in demand.items())
    return min(0.95, used / sum(n.gpus for n in config.nodes)) ** node_gpus


def plan_warm_pool(config: WarmPoolConfig, demand: Mapping[str, ModelDemand],
                   current: Mapping[str, Sequence[str]] | None = None) -> WarmPoolPlan:
    """Place checkpoints on nodes (see the module docstring). `current`: node -> models staged there now
    (nodes and models the config does not know are ignored)."""
    current = current or {}
    nodes = {n.name: n for n in config.nodes}
    sizes = {m.name: m.bytes for m in config.models}
    now = {n: [m for m in current.get(n, []) if m in sizes] for n in nodes}
    unplaced: dict[str, str] = {}
    items = _items(config, demand, now, unplaced)
    # Space held for copies already staged until their turn (node -> {model: bytes}); released lowest rank first.
    rank = {}
    for position, item in enumerate(items):
        if item.kept:
            rank.setdefault(item.model.name, position)
    reserved = {n: {m: sizes[m] for m in now[n] if m in rank} for n in nodes}
    free = {n: node.budget_bytes for n, node in nodes.items()}
    plan: dict[str, list[str]] = {n: [] for n in nodes}
    placements: list[Placement] = []

    def place(name: str, node: str, copy: int, value_s: float) -> None:
        kept = name in now[node]
        reserved[node].pop(name, None)
        free[node] -= sizes[name]
        plan[node].append(name)
        placements.append(Placement(name, node, copy, sizes[name], value_s, kept))

    for item in items:
        name = item.model.name
        node = _home(name, reserved, free, plan) or _room(name, sizes[name], free, reserved, plan, rank)
        if node is not None:
            place(name, node, item.copy, item.value_s)
    # Copies staged now that earned no place but still fit stay (worth nothing now, a download saved later).
    for node in sorted(nodes):
        for name in now[node]:
            if name not in plan[node] and sizes[name] <= free[node]:
                place(name, node, sum(name in v for v in plan.values()) + 1, 0.0)
                unplaced.pop(name, None)
    for name in sizes:
        if name not in unplaced and not any(p.model == name for p in placements):
            unplaced[name] = f"no room: {sizes[name]} bytes; every node's budget went to checkpoints worth more per byte"
    dropped = {n: [m for m in now[n] if m not in plan[n]] for n in nodes}
    used = {n: nodes[n].budget_bytes - free[n] for n in nodes}
    return WarmPoolPlan({n: sorted(v) for n, v in plan.items()}, placements, unplaced,
                        {n: v for n, v in dropped.items() if v}, used, dict(demand))


def _home(name: str, reserved: Mapping[str, dict[str, int]], free: Mapping[str, int],
          plan: Mapping[str, list[str]]) -> str | None:
    """A node that already holds the model, still holds its space for it, and has not got it yet (first by name)."""
    for node in sorted(reserved):
        if name in reserved[node] and name not in plan[node] and reserved[node][name] <= free[node]:
            return node
    return None


def _room(name: str, size: int, free: dict[str, int], reserved: dict[str, dict[str, int]],
          plan: Mapping[str, list[str]], rank: Mapping[str, int]) -> str | None:
    """The node with the most unreserved room for a new copy; else the one where the fewest reserved
    bytes must give way (the copies holding them rank lower: they have not had their turn yet)."""
    candidates = sorted(n for n in free if name not in plan[n] and size <= free[n])
    if not candidates:
        return None
    unreserved = {n: free[n] - sum(reserved[n].values()) for n in candidates}
    fits = [n for n in candidates if unreserved[n] >= size]
    if fits:
        return min(fits, key=lambda n: (-unreserved[n], n))
    node = min(candidates, key=lambda n: (size - unreserved[n], n))
    need = size - unreserved[node]
    for model in sorted(reserved[node], key=lambda m: -rank[m]):   # lowest rank gives way first
        if need <= 0:
            break
        need -= reserved[node].pop(model)
    return node
