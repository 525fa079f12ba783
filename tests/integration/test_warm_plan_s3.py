"""The warm-pool node agent against the test ground's S3 server: a node stages what the plan puts on
it, from S3, into the real loader cache, and evicts what a new plan takes away."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loader.cache import WarmCache
from loader.cli import main
from loader.make_checkpoint import CheckpointSpec, make_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_models(s3_server, tmp_path_factory) -> dict[str, str]:
    client = s3_server.client()
    out = {}
    for i, name in enumerate(("alpha", "beta", "gamma")):
        directory = tmp_path_factory.mktemp(name)
        make_checkpoint(directory, CheckpointSpec(total_bytes=2_000_000, shards=2, hidden=64, seed=i,
                                                  sha256_sidecars=True))
        for path in directory.iterdir():
            client.upload_file(str(path), s3_server.bucket, f"warm-plan/{name}/{path.name}")
        out[name] = f"s3://{s3_server.bucket}/warm-plan/{name}"
    return out


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)


def write_plan(path: Path, models: dict[str, str], nodes: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps({"version": 1, "nodes": nodes,
                                "models": {m: {"location": loc, "bytes": 2_000_000} for m, loc in models.items()}}))
    return path


def warm_plan(capsys, plan: Path, node: str, cache: Path) -> tuple[int, dict]:
    code = main(["warm-plan", "--plan", str(plan), "--node", node, "--cache-dir", str(cache), "--verify-sha256",
                 "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_node_follows_its_plan_from_s3(s3_env, s3_models, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    cache_a, cache_b = tmp_path / "node-a", tmp_path / "node-b"
    write_plan(plan, s3_models, {"node-a": ["alpha", "beta"], "*": ["gamma"]})
    code, a = warm_plan(capsys, plan, "node-a", cache_a)
    assert code == 0 and a["staged"] == ["alpha", "beta"] and set(a["downloaded"]) == {"alpha", "beta"}
    code, b = warm_plan(capsys, plan, "node-b", cache_b)        # not named: the "*" entry
    assert code == 0 and b["staged"] == ["gamma"]
    assert WarmCache(cache_a).locations() == [s3_models["alpha"], s3_models["beta"]]
    assert WarmCache(cache_b).locations() == [s3_models["gamma"]]

    # The plan moves beta off node-a and puts gamma there: beta is evicted, gamma downloaded, alpha kept.
    write_plan(plan, s3_models, {"node-a": ["alpha", "gamma"], "*": ["gamma"]})
    code, a2 = warm_plan(capsys, plan, "node-a", cache_a)
    assert code == 0 and a2["evicted"] == [s3_models["beta"]] and a2["downloaded"] == {"gamma": a2["downloaded"]["gamma"]}
    cache = WarmCache(cache_a)
    assert cache.locations() == [s3_models["alpha"], s3_models["gamma"]]
    assert cache.lookup(s3_models["beta"]) is None
    assert cache.verify(s3_models["alpha"]) and cache.verify(s3_models["gamma"])


def test_local_mode_plans_and_stages_its_own_cache(s3_env, s3_models, tmp_path, capsys):
    from autoscaler.cli import main as warmscale
    from autoscaler.local.config import load_config

    models = "\n".join(f"""  - {{name: {m}, model: {loc}, capacity: {{profile: tiny-llama-cpu}}}}""" for m, loc in s3_models.items())
    (tmp_path / "local.yaml").write_text(f"""
models:
{models}
warm_pool:
  cache_dir: cache
  budget: 20MB                    # room for two of the three checkpoints (8.3 MB each with sidecars)
  models:
    alpha: {{bytes: 8.4MB, saving_s: 3}}
    beta: {{bytes: 8.4MB, saving_s: 3}}
    gamma: {{bytes: 8.4MB, saving_s: 3}}
""")
    # beta bounces off zero most often (a request every ~10 min), gamma next, alpha almost never.
    rates = {"alpha": 0.00001, "beta": 1 / 600, "gamma": 1 / 3000}
    (tmp_path / "fc.json").write_text(json.dumps([
        {"model": m, "made_at": 0, "target_time": 600, "request_rate_p50": r, "request_rate_p90": r}
        for m, r in rates.items()]))
    argv = ["warm-pool", "local", "--config", str(tmp_path / "local.yaml"), "--forecast", str(tmp_path / "fc.json"),
            "--stage", "--json"]
    assert warmscale(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == {"local": ["beta", "gamma"]} and out["staging"]["staged"] == ["beta", "gamma"]
    assert WarmCache(tmp_path / "cache").locations() == [s3_models["beta"], s3_models["gamma"]]
    cfg = load_config(tmp_path / "local.yaml")
    engine_env = {m.name: m.env for m in cfg.models}
    assert engine_env["beta"]["WARMSCALE_LOADER_CACHE_DIR"] == str(tmp_path / "cache")

    # Demand moves to alpha: a clearly better checkpoint takes gamma's place; beta stays.
    rates = {"alpha": 1 / 600, "beta": 1 / 600, "gamma": 0.00001}
    (tmp_path / "fc.json").write_text(json.dumps([
        {"model": m, "made_at": 0, "target_time": 600, "request_rate_p50": r, "request_rate_p90": r}
        for m, r in rates.items()]))
    assert warmscale(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == {"local": ["alpha", "beta"]} and out["staging"]["evicted"] == [s3_models["gamma"]]
    assert WarmCache(tmp_path / "cache").locations() == [s3_models["alpha"], s3_models["beta"]]
