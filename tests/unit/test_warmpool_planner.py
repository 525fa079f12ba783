"""The warm-pool planner: budgets, value order, stickiness, oversized checkpoints, bad configuration."""
from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from autoscaler.contract import DemandForecast
from forecasting.warmpool import (ModelDemand, WarmPoolConfig, WarmPoolModel, WarmPoolNode, demand_from_forecasts,
                                  plan_warm_pool)
from loader.warmplan import parse_plan

GB = 10**9


def model(name: str, gb: float, saving_s: float = 20.0, **kw) -> WarmPoolModel:
    return WarmPoolModel(name=name, location=f"s3://models/{name}", bytes=int(gb * GB), saving_s=saving_s, **kw)


def config(models, nodes=2, disk_gb=40, **kw) -> WarmPoolConfig:
    return WarmPoolConfig(nodes=[WarmPoolNode(name=f"n{i}", disk_bytes=disk_gb * GB) for i in range(nodes)],
                          models=models, **kw)


def demand(**starts: float) -> dict[str, ModelDemand]:
    return {m: ModelDemand(m, s) for m, s in starts.items()}


def test_every_node_stays_within_its_budget():
    models = [model(f"m{i}", 15) for i in range(8)]
    plan = plan_warm_pool(config(models, nodes=3, disk_gb=40), demand(**{f"m{i}": 10 - i for i in range(8)}))
    for node, names in plan.nodes.items():
        assert sum(15 * GB for _ in names) <= 40 * GB, (node, names)
        assert plan.used_bytes[node] == 15 * GB * len(names)
    assert sum(len(v) for v in plan.nodes.values()) == 6        # 2 per node x 3 nodes


def test_memory_budget_binds_when_the_pool_is_in_ram():
    cfg = WarmPoolConfig(nodes=[WarmPoolNode(name="n0", disk_bytes=100 * GB, memory_bytes=20 * GB)],
                         models=[model("a", 15), model("b", 15)])
    plan = plan_warm_pool(cfg, demand(a=5, b=4))
    assert plan.nodes == {"n0": ["a"]} and "no room" in plan.unplaced["b"]


def test_highest_value_per_byte_goes_first():
    # one node, room for 30 GB: a small busy model beats a big one worth a little more in total.
    cfg = config([model("big", 25), model("small", 5), model("mid", 20)], nodes=1, disk_gb=30)
    plan = plan_warm_pool(cfg, demand(big=12, small=10, mid=3))
    assert plan.nodes["n0"] == ["big", "small"]       # small: 40 s/GB, big: 9.6 s/GB, mid: 3 s/GB
    values = {p.model: p.value_s for p in plan.placements}
    assert values == {"small": pytest.approx(200.0), "big": pytest.approx(240.0)}
    assert "mid" in plan.unplaced


def test_second_copies_rank_below_first_copies_of_other_models():
    cfg = config([model("a", 10), model("b", 10)], nodes=2, disk_gb=10, busy_probability=0.5)
    plan = plan_warm_pool(cfg, demand(a=10, b=6))      # a's second copy is worth 10 x 0.5 = 5 < 6
    assert sorted(plan.nodes.values()) == [["a"], ["b"]]


def test_a_model_whose_peak_needs_two_nodes_gets_two_full_value_copies():
    cfg = config([model("a", 10, requests_per_replica=1.0), model("b", 10)], nodes=2, disk_gb=10, busy_probability=0.5)
    d = {"a": ModelDemand("a", 10, peak_replicas=12), "b": ModelDemand("b", 4)}   # 12 GPUs > 8 per node: 5 starts per copy > 4
    plan = plan_warm_pool(cfg, d)
    assert plan.nodes == {"n0": ["a"], "n1": ["a"]} and "b" in plan.unplaced


def test_replanning_unchanged_demand_changes_nothing():
    models = [model(f"m{i}", 10 + i) for i in range(6)]
    cfg = config(models, nodes=3, disk_gb=35)
    d = demand(**{f"m{i}": 1 + i for i in range(6)})
    first = plan_warm_pool(cfg, d)
    again = plan_warm_pool(cfg, d, current=first.nodes)
    assert again.nodes == first.nodes and not again.dropped
    assert all(p.kept for p in again.placements)


def test_a_staged_model_stays_unless_a_clearly_better_one_needs_its_space():
    cfg = config([model("old", 10), model("new", 10)], nodes=1, disk_gb=10, stickiness=0.5)
    staged = {"n0": ["old"]}
    slightly = plan_warm_pool(cfg, demand(old=10, new=12), current=staged)     # 1.2x: not clearly better
    assert slightly.nodes == {"n0": ["old"]} and "no room" in slightly.unplaced["new"]
    clearly = plan_warm_pool(cfg, demand(old=10, new=20), current=staged)       # 2x > 1.5x
    assert clearly.nodes == {"n0": ["new"]} and clearly.dropped == {"n0": ["old"]}


def test_a_newcomer_takes_free_room_before_a_staged_copys_space():
    cfg = config([model("old", 10), model("new", 10)], nodes=2, disk_gb=10, busy_probability=0.5)
    plan = plan_warm_pool(cfg, demand(old=10, new=20), current={"n0": ["old"]})   # new x2 worth 0.5 x 20 < 10
    assert plan.nodes == {"n0": ["old"], "n1": ["new"]}


def test_staged_copies_without_demand_stay_while_the_space_is_free():
    cfg = config([model("idle", 10), model("busy", 10)], nodes=1, disk_gb=25)
    plan = plan_warm_pool(cfg, demand(busy=3), current={"n0": ["idle"]})
    assert plan.nodes == {"n0": ["busy", "idle"]}
    assert [p.value_s for p in plan.placements if p.model == "idle"] == [0.0]


def test_an_oversized_checkpoint_is_reported_not_placed():
    cfg = config([model("huge", 500), model("ok", 10)], nodes=2, disk_gb=40)
    plan = plan_warm_pool(cfg, demand(huge=100, ok=1))
    assert all("huge" not in names for names in plan.nodes.values())
    assert "larger than every node's budget" in plan.unplaced["huge"] and "500000000000" in plan.unplaced["huge"]


def test_a_model_without_expected_starts_is_not_placed():
    plan = plan_warm_pool(config([model("quiet", 1)]), demand(quiet=0))
    assert plan.nodes == {"n0": [], "n1": []} and "no expected cold starts" in plan.unplaced["quiet"]


def test_max_copies_caps_replication():
    cfg = config([model("a", 1)], nodes=4, disk_gb=10, max_copies=2, busy_probability=0.5)
    plan = plan_warm_pool(cfg, demand(a=100))
    assert sum("a" in v for v in plan.nodes.values()) == 2


@pytest.mark.parametrize("change,field", [
    ({"horizon_s": 0}, "horizon_s"),
    ({"busy_probability": 1.0}, "busy_probability"),
    ({"nodes": []}, "nodes"),
    ({"nodes": [{"name": "a", "disk_bytes": 1}, {"name": "a", "disk_bytes": 2}]}, "nodes"),
    ({"nodes": [{"name": "a", "disk_bytes": -1}]}, "nodes.0.disk_bytes"),
    ({"models": [{"name": "m", "location": "s3://x", "bytes": 0, "saving_s": 1}]}, "models.0.bytes"),
    ({"models": [{"name": "m", "location": "s3://x", "bytes": 1, "saving_s": 1, "colour": "red"}]}, "models.0.colour"),
])
def test_bad_configuration_names_the_field(change, field):
    raw = {"nodes": [{"name": "a", "disk_bytes": 1}], **change}
    with pytest.raises(ValidationError) as err:
        WarmPoolConfig.model_validate(raw)
    locs = {".".join(map(str, e["loc"])) for e in err.value.errors()}
    assert field in locs, locs


def test_demand_from_forecasts_counts_starts_from_zero_and_growth():
    m = model("m", 1, requests_per_replica=2.0, idle_grace_s=300)
    sparse = [DemandForecast("m", 0, t, 0.0005, 0.001) for t in (600, 1800, 3600)]
    d = demand_from_forecasts(m, sparse, now=0, horizon_s=3600)
    assert d.starts == pytest.approx(0.001 * 3600 * math.exp(-0.3) + 1)        # + 1 replica to reach the peak
    busy = [DemandForecast("m", 0, 1800, 4.0, 5.0)]
    d = demand_from_forecasts(m, busy, now=0, horizon_s=3600, current_replicas=2)
    assert d.peak_replicas == 3 and d.starts == pytest.approx(1.0, abs=1e-6)      # never idles 300 s at 5 req/s
    late = [DemandForecast("m", 0, 7200, 1.0, 1.0)]
    assert demand_from_forecasts(m, late, now=0, horizon_s=3600).starts == 0


def test_plan_document_is_what_the_node_agent_reads():
    cfg = config([model("a", 10), model("b", 10), model("unused", 1)], nodes=2, disk_gb=10)
    plan = plan_warm_pool(cfg, demand(a=5, b=4))
    doc = parse_plan(plan.document(cfg, generated_at=1.0))
    assert doc.nodes == plan.nodes and set(doc.models) == {"a", "b"}
    assert doc.models["a"].location == "s3://models/a" and doc.models_for("n0") == plan.nodes["n0"]
    assert doc.models_for("some-other-node") == []


def test_busy_probability_follows_the_forecast_fleet_occupancy():
    # An idle fleet: no second copies while a first copy of anything is left out.
    idle = config([model("hot", 10), model("tail", 10)], nodes=2, disk_gb=10)
    plan = plan_warm_pool(idle, demand(hot=100, tail=1))
    assert sorted(plan.nodes.values()) == [["hot"], ["tail"]]
    # A full fleet (peaks fill 15 of 16 GPUs: busy = (15/16)^8 = 0.6): a start often finds the first staged node full.
    full = {"hot": ModelDemand("hot", 100, peak_replicas=7), "tail": ModelDemand("tail", 1, peak_replicas=8)}
    plan = plan_warm_pool(idle, full)
    assert plan.nodes == {"n0": ["hot"], "n1": ["hot"]}
