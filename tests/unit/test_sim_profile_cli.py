"""Engine profiles (a source for every number, one ReplicaCapacity) and the `simulate` CLI."""
from __future__ import annotations

import argparse

import pytest

from autoscaler.policy.capacity import ReplicaCapacity
from autoscaler.sim.profile import PROFILE_NAMES, load_profile


def test_h100_profile_cites_a_source_for_every_number():
    prof = load_profile("h100-llama-3.1-8b")
    numbers = [*type(prof.engine).model_fields, *type(prof.cold_start).model_fields]
    numbers.remove("request_overhead_s")   # 0 on GPU: folded into the measured step costs
    missing = [k for k in numbers if k not in prof.sources and not (k == "max_num_batched_tokens")]
    assert not missing, f"numbers without a source: {missing}"
    assert "cpu" in prof.sources


def test_profile_gives_the_policy_its_capacity():
    prof = load_profile()
    cap = prof.to_capacity()
    assert isinstance(cap, ReplicaCapacity)
    assert cap.cold_start_s == pytest.approx(5 + 0 + 16.06 / 2.0 + 18)
    assert cap.max_num_seqs == prof.engine.max_num_seqs and cap.kv_cache_tokens == prof.engine.kv_cache_tokens
    # decode throughput is quoted at the reference TPOT: a full step at that batch meets it
    assert 2000 < cap.decode_tokens_per_s < 20000
    # sustainable rate: a replica near it is busy ~ all the time by the policy's own measure
    rate = prof.sustainable_rate(1155, 211)
    assert 0.7 < cap.busy_fraction(rate * 1155, rate * 211) < 1.3


def test_all_shipped_profiles_load():
    names = PROFILE_NAMES()
    assert "h100-llama-3.1-8b" in names
    for n in names:
        assert load_profile(n).to_capacity()


def test_cpu_profile_was_fitted_against_the_test_grounds_engine_arguments():
    # a changed engine (e.g. -O0 dropping torch.compile) changes step times: refit with
    # hack/calibrate_cpu_profile.py
    from tests.ground.vllm import DEFAULT_ARGS

    prof = load_profile("tiny-llama-cpu")
    assert prof.fit is not None and prof.fit.get("engine_args") == list(DEFAULT_ARGS), (
        f"tiny-llama-cpu.yaml was fitted with {prof.fit and prof.fit.get('engine_args')}, the ground runs "
        f"{list(DEFAULT_ARGS)}: run hack/calibrate_cpu_profile.py")
    assert prof.engine.max_num_seqs == int(DEFAULT_ARGS[DEFAULT_ARGS.index("--max-num-seqs") + 1])


def test_bad_profile_is_reported_with_its_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmodel: y\naccelerator: z\nengine: {max_num_seqs: -1}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_profile(p)
    with pytest.raises(FileNotFoundError):
        load_profile("no-such-profile")


def _parser():
    from autoscaler.sim.cli import register

    ap = argparse.ArgumentParser(prog="warmscale")
    register(ap.add_subparsers(dest="command"))
    return ap


def _tiny_trace(tmp_path):
    trace = tmp_path / "tiny.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [f"{i * 0.5:.3f},{500 + i % 7 * 100},{20 + i % 5}"
                                                          for i in range(1200)]
    trace.write_text("\n".join(lines) + "\n")
    return trace


def test_cli_simulates_a_trace_file_and_writes_json_and_plot(tmp_path, capsys):
    import json

    trace = _tiny_trace(tmp_path)
    args = _parser().parse_args(["simulate", "--trace", str(trace), "--policy", "static,oracle",
                                 "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "static" in out and "oracle" in out and "GPU-h" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert {r["policy"] for r in data["results"]} == {"static", "oracle"}
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_cli_gives_the_policies_twice_the_oracles_peak_unless_told_otherwise(tmp_path, capsys):
    import json

    trace = _tiny_trace(tmp_path)
    args = _parser().parse_args(["simulate", "--trace", str(trace), "--policy", "hpa-cpu,oracle",
                                 "--json", str(tmp_path / "r.json")])
    assert args.handler(args) == 0
    results = {r["policy"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    budget = 2 * results["oracle"]["peak_replicas"]
    assert f"GPU budget {budget} = 2 x the oracle's peak" in capsys.readouterr().out
    assert results["hpa-cpu"]["peak_replicas"] <= budget
    args = _parser().parse_args(["simulate", "--trace", str(trace), "--policy", "hpa-cpu,oracle", "--gpu-budget", "1"])
    assert args.handler(args) == 0
    assert "GPU budget" not in capsys.readouterr().out


def test_cli_reports_a_bad_trace_clearly(tmp_path, capsys):
    trace = tmp_path / "bad.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1.0,10,2\n0.5,10,2\n")
    args = _parser().parse_args(["simulate", "--trace", str(trace), "--policy", "static"])
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "row 3" in err and "TIMESTAMP" in err


def test_slice_syntax():
    from autoscaler.sim.runner import parse_slice, parse_span

    assert parse_slice("7d:10d") == (7 * 86400, 10 * 86400)
    assert parse_slice(":90m") == (None, 5400)
    assert parse_span("1d2h3m4s") == 86400 + 7200 + 180 + 4
    with pytest.raises(ValueError):
        parse_slice("7d")
    with pytest.raises(ValueError):
        parse_span("soon")


def test_engine_timings_sums_vllm_request_histograms_over_label_sets():
    from autoscaler.sim.calibrate import engine_timings

    text = "\n".join([
        '# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.',
        'vllm:request_queue_time_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 3.0',
        'vllm:request_queue_time_seconds_sum{engine="0",model_name="tiny"} 0.25',
        'vllm:request_queue_time_seconds_count{engine="0",model_name="tiny"} 3.0',
        'vllm:request_queue_time_seconds_sum{engine="1",model_name="tiny"} 0.5',
        'vllm:request_queue_time_seconds_count{engine="1",model_name="tiny"} 1.0',
        'vllm:request_prefill_time_seconds_sum{engine="0",model_name="tiny"} 0.04',
        'vllm:request_prefill_time_seconds_count{engine="0",model_name="tiny"} 4.0',
        'vllm:request_decode_time_seconds_created{engine="0",model_name="tiny"} 1.79e+09',
    ])
    got = engine_timings(text)
    assert got["queue"] == (0.75, 4.0)
    assert got["prefill"] == (0.04, 4.0)
    assert got["decode"] == (0.0, 0.0)


def _run(argv, capsys):
    args = _parser().parse_args(argv)
    code = args.handler(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_errors_are_one_unwrapped_line_even_for_a_long_path(tmp_path, capsys):
    deep = tmp_path.joinpath(*[f"a-rather-long-folder-name-{i}" for i in range(6)])
    deep.mkdir(parents=True)
    trace = deep / "bad.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1.0,10,2\n0.5,10,2\n")
    code, _, err = _run(["simulate", "--trace", str(trace), "--policy", "static"], capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(trace) in lines[0] and "row 3" in lines[0]


def test_unknown_policy_is_an_error_line_with_exit_2(tmp_path, capsys):
    code, _, err = _run(["simulate", "--trace", str(_tiny_trace(tmp_path)), "--policy", "warmscale,kedaa"], capsys)
    assert code == 2 and err.startswith("error: ") and "'kedaa'" in err and "keda" in err


def test_gpu_budget_zero_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["simulate", "--trace", str(_tiny_trace(tmp_path)), "--gpu-budget", "0"])
    assert exc.value.code == 2 and "must be >= 1, got 0" in capsys.readouterr().err


def test_one_colon_model_gets_a_two_colon_hint(tmp_path, capsys):
    rates = tmp_path / "rates.csv"
    rates.write_text("window_start_s,model,aggregate_rate_rps\n0,a,1\n600,a,2\n0,b,1\n600,b,1\n")
    code, _, err = _run(["simulate", "--trace", f"{rates}:a", "--policy", "static"], capsys)
    assert code == 2 and f"{rates}::a (two colons)" in err
    code, out, _ = _run(["simulate", "--trace", f"{rates}::b", "--policy", "static", "--peak-replicas", "1"], capsys)
    assert code == 0 and "rates, model b:" in out


def test_slice_past_the_end_is_clipped_with_a_note_or_an_error(tmp_path, capsys):
    import json

    trace = _tiny_trace(tmp_path)   # 600 s long
    out = tmp_path / "r.json"
    code, stdout, _ = _run(["simulate", "--trace", str(trace), "--policy", "static", "--slice", "5m:2h",
                            "--json", str(out)], capsys)
    assert code == 0
    data = json.loads(out.read_text())
    assert data["results"][0]["end_s"] == pytest.approx(599.5, abs=0.01)
    assert any("clipped to 5m:9m59.5s" in n for n in data["notes"])
    code, _, err = _run(["simulate", "--trace", str(trace), "--policy", "static", "--slice", "1h:2h"], capsys)
    assert code == 2 and "starts after trace tiny ends (it lasts 9m59.5s)" in err


def test_static_size_and_policy_settings_from_the_command_line(tmp_path, capsys):
    import json

    trace = _tiny_trace(tmp_path)
    out = tmp_path / "r.json"
    code, stdout, _ = _run(["simulate", "--trace", str(trace), "--policy", "static,knative", "--static-replicas",
                            "3", "--set", "knative.target_concurrency=7", "--json", str(out)], capsys)
    assert code == 0
    res = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    assert res["static"]["peak_replicas"] == 3
    code, _, err = _run(["simulate", "--trace", str(trace), "--policy", "knative", "--set",
                         "knative.no_such_knob=1"], capsys)
    assert code == 2 and "no_such_knob" in err and err.startswith("error: ")
    code, _, err = _run(["simulate", "--trace", str(trace), "--policy", "knative", "--set", "keda.threshold=3"],
                        capsys)
    assert code == 2 and "'keda' is not among those run" in err


def test_verdict_says_what_the_trace_allows_when_nothing_reaches_99():
    from autoscaler.sim.runner import verdict
    from autoscaler.sim.results import SimResult

    def res(policy, att, gpu_h):
        return SimResult(policy, "t", "m", "p", 1.0, 0, 1, 1000, 1000, {}, {"2s/100ms": att}, None, None, None, None,
                         gpu_h, 0, 0, 0, 0, 0.0, 0, 1, 1.0, {}, 0.0, 0.0)

    v = verdict([res("warmscale", 0.95, 2.0), res("keda", 0.97, 3.0), res("oracle", 0.999, 1.0)])
    assert v["reached"] == [] and v["best"] == ("keda", 0.97)
    assert "no run reaches 99 %" in v["text"] and "30 of 1,000" in v["text"]
    v = verdict([res("warmscale", 0.995, 2.0), res("keda", 0.991, 3.0)])
    assert v["reached"] == ["warmscale", "keda"] and "warmscale (2.00 GPU-h)" in v["text"]


def test_one_capacity_model_the_policys_default_is_the_profiles():
    from autoscaler.policy.capacity import H100_LLAMA3_8B

    prof = load_profile("h100-llama-3.1-8b")
    cap = prof.to_capacity()
    assert cap == H100_LLAMA3_8B
    assert prof.sustainable_rate(1155, 211) == cap.sustainable_rate(1155, 211)
    # without the step model the rate is what the policy's busy fraction says a replica holds
    plain = ReplicaCapacity(max_num_seqs=10**6, kv_cache_tokens=10**9, prefill_tokens_per_s=10_000.0,
                            decode_tokens_per_s=1000.0, cold_start_s=30.0)
    assert plain.sustainable_rate(1000, 100) == pytest.approx(1 / (0.1 + 0.1))


def test_idle_ttft_is_the_prefill_chunks_on_an_empty_replica():
    prof = load_profile()
    e = prof.engine
    assert prof.idle_ttft_s(1000) == pytest.approx(e.step_base_s + 1000 / e.prefill_tokens_per_s)
    long = prof.idle_ttft_s(3 * e.max_num_batched_tokens)
    assert long == pytest.approx(3 * e.step_base_s + 3 * e.max_num_batched_tokens / e.prefill_tokens_per_s
                                 + e.step_per_kv_token_s * 3 * e.max_num_batched_tokens)
