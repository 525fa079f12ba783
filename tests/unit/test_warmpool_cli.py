"""`warmscale warm-pool plan`: JSON and ConfigMap output, stickiness through --current, exit codes."""
from __future__ import annotations

import json

import pytest
import yaml

from autoscaler.cli import main
from loader.warmplan import parse_plan

FLEET = """
horizon_s: 3600
nodes:
  - {name: gpu-a, disk_bytes: 40GB}
  - {name: gpu-b, disk_bytes: 20GB}
models:
  - {name: sparse, location: s3://m/sparse, bytes: 16GB, saving_s: 4}
  - {name: busy, location: s3://m/busy, bytes: 16GB, saving_s: 4, requests_per_replica: 0.5, scale_to_zero: false}
  - {name: huge, location: s3://m/huge, bytes: 90GB, saving_s: 12}
"""
FORECAST = {"now": 0, "replicas": {"busy": 1}, "forecasts": [
    {"model": "sparse", "made_at": 0, "target_time": 1800, "request_rate_p50": 0.001, "request_rate_p90": 0.003},
    {"model": "busy", "made_at": 0, "target_time": 1800, "request_rate_p50": 1.0, "request_rate_p90": 2.0},
    {"model": "huge", "made_at": 0, "target_time": 1800, "request_rate_p50": 0.01, "request_rate_p90": 0.02}]}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "fleet.yaml").write_text(FLEET)
    (tmp_path / "fc.json").write_text(json.dumps(FORECAST))
    return tmp_path


def plan(files, capsys, *extra) -> tuple[int, str, str]:
    code = main(["warm-pool", "plan", "--config", str(files / "fleet.yaml"), "--forecast", str(files / "fc.json"),
                 *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_plan_places_within_budgets_and_reports_the_oversized(files, capsys):
    code, out, _ = plan(files, capsys, "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["nodes"] == {"gpu-a": ["busy", "sparse"], "gpu-b": ["sparse"]}
    assert "larger than every node's budget" in doc["unplaced"]["huge"]
    assert parse_plan(doc["document"]).models_for("gpu-b") == ["sparse"]


def test_configmap_output_carries_the_plan_document(files, capsys):
    code, out, _ = plan(files, capsys, "--configmap", "warmscale-warm-plan")
    cm = yaml.safe_load(out)
    assert code == 0 and cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == "warmscale-warm-pool"
    assert parse_plan(json.loads(cm["data"]["plan.json"])).nodes["gpu-a"] == ["busy", "sparse"]


def test_current_plan_keeps_staged_copies(files, capsys):
    current = {"version": 1, "models": {"busy": {"location": "s3://m/busy", "bytes": 16 * 10**9}},
               "nodes": {"gpu-b": ["busy"]}}
    (files / "current.json").write_text(json.dumps(current))
    code, out, _ = plan(files, capsys, "--json", "--current", str(files / "current.json"))
    doc = json.loads(out)
    # Fresh, gpu-b gets a second copy of sparse (first test); with busy staged there, busy stays.
    assert code == 0 and doc["nodes"] == {"gpu-a": ["busy", "sparse"], "gpu-b": ["busy"]}
    assert [p["kept"] for p in doc["placements"] if p["node"] == "gpu-b"] == [True]


@pytest.mark.parametrize("edit,needle", [
    (lambda f: (f / "fleet.yaml").write_text(FLEET.replace("40GB", "-5")), "nodes.0.disk_bytes=-5"),
    (lambda f: (f / "fleet.yaml").write_text(FLEET.replace("saving_s: 4}", "saving_s: 4, colour: red}", 1)),
     "models.0.colour"),
    (lambda f: (f / "fc.json").unlink(), "forecast"),
    (lambda f: (f / "fc.json").write_text('[{"model": "x"}]'), "forecasts.0"),
])
def test_bad_input_exits_2_naming_the_field(files, capsys, edit, needle):
    edit(files)
    code, out, err = plan(files, capsys, "--json")
    assert code == 2 and needle in err and "Traceback" not in err and out == ""


def test_local_warm_pool_must_name_s3_models(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "local.yaml").write_text("""
models:
  - {name: here, model: model, capacity: {profile: tiny-llama-cpu}}
warm_pool: {cache_dir: cache, budget: 1GB, models: {here: {bytes: 1MB, saving_s: 1}}}
""")
    (tmp_path / "fc.json").write_text("[]")
    code = main(["warm-pool", "local", "--config", str(tmp_path / "local.yaml"), "--forecast", str(tmp_path / "fc.json")])
    err = capsys.readouterr().err
    assert code == 2 and "warm_pool.models.here" in err and "Traceback" not in err


def test_local_warm_pool_bad_size_names_the_field(tmp_path, capsys):
    (tmp_path / "local.yaml").write_text("""
models:
  - {name: s, model: s3://b/s, capacity: {profile: tiny-llama-cpu}}
warm_pool: {cache_dir: cache, budget: lots, models: {s: {bytes: 1MB, saving_s: 1}}}
""")
    (tmp_path / "fc.json").write_text("[]")
    code = main(["warm-pool", "local", "--config", str(tmp_path / "local.yaml"), "--forecast", str(tmp_path / "fc.json")])
    err = capsys.readouterr().err
    assert code == 2 and "warm_pool.budget" in err and "lots" in err
