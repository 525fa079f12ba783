"""The warm-pool node agent: the plan document, label keys, and following a plan on a real cache
(local-directory checkpoints; the S3 variant is in tests/integration/test_warm_plan_s3.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loader.cache import WarmCache
from loader.cli import main
from loader.config import LoaderConfig
from loader.make_checkpoint import CheckpointSpec, make_checkpoint
from loader.warmplan import (LABEL_PREFIX, PlanError, follow_plan, label_key, node_labels, parse_plan)

# A qualified label key's name part (k8s.io/apimachinery validation.IsQualifiedName).
NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for i, name in enumerate(("a", "b", "c")):
        make_checkpoint(root / name, CheckpointSpec(total_bytes=400_000, hidden=64, seed=i))
        out[name] = str(root / name)
    return out


def plan_for(checkpoints: dict[str, str], nodes: dict[str, list[str]]) -> dict:
    return {"version": 1, "models": {m: {"location": loc, "bytes": 400_000} for m, loc in checkpoints.items()},
            "nodes": nodes}


@pytest.mark.parametrize("model", ["llama-3-8b", "meta-llama/Llama-3.1-8B-Instruct", "Llama", "x" * 200,
                                   "a_b.c", "--weird--", "模型"])
def test_label_keys_are_valid_qualified_names(model):
    key = label_key(model)
    assert key.startswith(LABEL_PREFIX)
    name = key[len(LABEL_PREFIX):]
    assert len(name) <= 63 and NAME.match(name), key


def test_label_keys_keep_simple_names_and_never_collide():
    assert label_key("llama-3-8b") == "staged.warmscale.io/llama-3-8b"
    assert label_key("Llama") != label_key("llama")
    assert label_key("x" * 100) != label_key("x" * 101)


def test_node_label_patch_sets_ours_removes_dropped_leaves_others():
    current = {"kubernetes.io/hostname": "n", label_key("old"): "true", label_key("kept"): "true"}
    patch = node_labels(["kept", "new"], current)
    assert patch == {label_key("old"): None, label_key("new"): "true"}


@pytest.mark.parametrize("raw,field", [
    ({"version": 2}, "version"),
    ({"nodes": {"n": ["ghost"]}}, "nodes.n"),
    ({"models": {"m": {"location": "", "bytes": 1}}}, "models.m.location"),
    ({"models": {}, "extra": 1}, "extra"),
])
def test_bad_plan_names_the_field(raw, field):
    with pytest.raises(PlanError, match=re.escape(field)):
        parse_plan(raw)


def test_every_node_entry_applies_to_nodes_the_plan_does_not_name(checkpoints):
    plan = parse_plan(plan_for(checkpoints, {"gpu-1": ["a"], "*": ["b"]}))
    assert plan.models_for("gpu-1") == ["a"] and plan.models_for("gpu-9") == ["b"]


def test_following_the_plan_stages_planned_and_evicts_the_rest(checkpoints, tmp_path):
    cache = WarmCache(tmp_path / "cache")
    config = LoaderConfig()
    first = follow_plan(parse_plan(plan_for(checkpoints, {"n": ["a", "b"]})), "n", cache, config)
    assert first.staged == ["a", "b"] and set(first.downloaded) == {"a", "b"} and not first.evicted
    assert cache.locations() == sorted([checkpoints["a"], checkpoints["b"]])
    second = follow_plan(parse_plan(plan_for(checkpoints, {"n": ["b", "c"]})), "n", cache, config)
    assert second.staged == ["b", "c"] and set(second.downloaded) == {"c"}      # b was already there
    assert second.evicted == [checkpoints["a"]]
    assert cache.locations() == sorted([checkpoints["b"], checkpoints["c"]])
    assert cache.lookup(checkpoints["a"]) is None and cache.lookup(checkpoints["c"]) is not None


def test_an_entry_being_read_is_not_evicted_until_it_is_released(checkpoints, tmp_path):
    cache = WarmCache(tmp_path / "cache")
    follow_plan(parse_plan(plan_for(checkpoints, {"n": ["a"]})), "n", cache, LoaderConfig())
    empty = parse_plan(plan_for(checkpoints, {"n": []}))
    with cache.reading(checkpoints["a"]):
        held = follow_plan(empty, "n", cache, LoaderConfig())
    assert held.busy == [checkpoints["a"]] and cache.locations() == [checkpoints["a"]]
    after = follow_plan(empty, "n", cache, LoaderConfig())
    assert after.evicted == [checkpoints["a"]] and cache.locations() == []


def test_warm_plan_cli_reports_a_failed_model_and_stages_the_others(checkpoints, tmp_path, capsys):
    doc = plan_for(checkpoints, {"n": ["a", "gone"]})
    doc["models"]["gone"] = {"location": str(tmp_path / "missing"), "bytes": 1}
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    code = main(["warm-plan", "--plan", str(tmp_path / "plan.json"), "--node", "n", "--cache-dir",
                 str(tmp_path / "cache"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 3 and out["exit_code"] == 3 and out["staged"] == ["a"] and "gone" in out["failed"]


def test_warm_plan_cli_rejects_a_bad_plan_as_usage(tmp_path, capsys):
    (tmp_path / "plan.json").write_text('{"version": 1, "nodes": {"n": ["ghost"]}}')
    code = main(["warm-plan", "--plan", str(tmp_path / "plan.json"), "--node", "n", "--cache-dir",
                 str(tmp_path / "cache"), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "nodes.n" in json.loads(captured.out)["error"] and "Traceback" not in captured.err
