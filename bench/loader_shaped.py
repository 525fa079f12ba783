"""Weight loading from object storage shaped like object storage: versitygw behind toxiproxy, each
connection capped at a per-connection rate with a first-byte latency, so throughput comes from
parallelism; then stragglers on top.

    .venv/bin/python bench/loader_shaped.py [--size 3GB] [--repeats 5] [--rate-mb-s 25] [--latency-ms 30]
        [--scenarios clean,stalls_2pct_5s] [--contenders ceiling_curl,warmscale,runai_best]
        [--sweep-concurrency 16,32,48,64]

--scenarios and --contenders run a subset (the curl and runai sweeps always run: they are the same-run
baseline). --sweep-concurrency instead runs warmscale at each concurrency on the clean shape (host and ring
path, memory limit at its default), each next to curl with as many streams, and writes
bench/results/loader_shaped_concurrency.{json,md}.

Scenarios: clean; a share of connections (2 %) whose every response waits another 5 s (toxiproxy
draws toxics per connection, and clients keep connections alive, so about that share of ranges
stall); one connection in ten at a tenth of the rate. Contenders, each in its own process and
interleaved run by run: curl with parallel ranged GETs (the shaped ceiling), warmscale (defaults),
runai-model-streamer at its defaults and at its best concurrency (a sweep on the clean shape),
boto3 download_file + safetensors.load_file. Medians of --repeats runs with min and max.
Writes bench/results/loader_shaped.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loader import RESULTS, WORK, median_run, raw_curl, run_child  # noqa: E402

SETTLE_S = 7.0  # seconds for the links of one shape to close before the next is set (longer than a stall)
STREAMS = 16  # parallel connections of the ceiling (warmscale derives its own from the memory budget)
RUNAI_SWEEP = (16, 32, 64)


def summary(runs: list[dict]) -> dict:
    """Median, min and max GB/s (and seconds) over the runs; memory of the worst run."""
    mid = median_run(runs)
    out = {"median_gb_per_s": round(mid["gb_per_s"], 4), "min_gb_per_s": mid["min_gb_per_s"],
           "max_gb_per_s": mid["max_gb_per_s"],
           "median_seconds": round(statistics.median(r["seconds"] for r in runs), 3), "runs": len(runs)}
    return out | {k: mid[k] for k in ("peak_rss_minus_held", "rss_over_base", "hedges", "hedge_wins", "losers_aborted",
                                         "range_bytes", "memory_limit_bytes") if k in mid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3GB")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rate-mb-s", type=float, default=15.0, help="per-connection bandwidth cap (MB/s)")
    parser.add_argument("--latency-ms", type=int, default=30, help="first-byte latency of every response")
    parser.add_argument("--note", action="append", default=[], help="a line for the results (why a size, say)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset of " + ",".join(CONTENDERS))
    parser.add_argument("--sweep-concurrency", default="", help="comma-separated warmscale concurrencies (clean shape)")
    parser.add_argument("--warmscale-config", default="{}", help="JSON of LoaderConfig fields for warmscale's runs")
    parser.add_argument("--ceiling-in", default=",".join(SCENARIOS),
                        help="scenarios the curl ceiling runs in (it takes ~10x its clean time with slow connections)")
    args = parser.parse_args()
    scenario_names = _subset(args.scenarios, SCENARIOS, "--scenarios")
    contender_names = _subset(args.contenders, CONTENDERS, "--contenders")
    sweep_concurrency = [int(c) for c in args.sweep_concurrency.split(",") if c]
    warmscale_config = json.loads(args.warmscale_config)
    ceiling_in = _subset(args.ceiling_in, SCENARIOS, "--ceiling-in")

    from loader.cli import parse_size
    from loader.make_checkpoint import CheckpointSpec, make_checkpoint
    from tests.ground.s3 import start_s3_server
    from tests.ground.toxiproxy import Shape, start_toxiproxy

    size = parse_size(args.size)
    ckpt = WORK / f"ckpt-{size}-{args.shards}"
    if not ckpt.exists():
        make_checkpoint(ckpt, CheckpointSpec(total_bytes=size, shards=args.shards))
    shards = sorted(ckpt.glob("*.safetensors"))
    rate_kb_s = int(args.rate_mb_s * 1000)
    shapes = {
        "clean": Shape(rate_kb_s, args.latency_ms),
        "stalls_2pct_5s": Shape(rate_kb_s, args.latency_ms, stall_share=0.02, stall_ms=5000),
        "slow_1_in_10": Shape(rate_kb_s, args.latency_ms, slow_share=0.1, slow_rate_kb_s=rate_kb_s // 10),
    }
    results: dict[str, object] = {
        "checkpoint": {"bytes": sum(p.stat().st_size for p in shards), "shards": len(shards)},
        "shape": {"per_connection_mb_s": args.rate_mb_s, "first_byte_latency_ms": args.latency_ms,
                  "aggregate_mb_s": args.rate_mb_s * STREAMS, "ceiling_streams": STREAMS},
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "repeats": args.repeats,
        "notes": args.note,
        "scenarios_run": scenario_names,
        "ceiling_in": ceiling_in,
        "contenders_run": contender_names,
        "warmscale_config": warmscale_config,
    }
    work = WORK / "shaped"
    shutil.rmtree(work, ignore_errors=True)
    with start_s3_server(work / "s3", bucket="bench") as s3, start_toxiproxy(work / "toxiproxy") as toxi:
        upstream = s3.endpoint_url.removeprefix("http://")
        endpoint = f"http://{toxi.proxy('s3', upstream)}"
        os.environ.update(s3.env() | {"AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint})
        from boto3.s3.transfer import TransferConfig

        client = s3.client()
        objects = []
        for path in shards:
            client.upload_file(str(path), s3.bucket, f"model/{path.name}", Config=TransferConfig(multipart_threshold=1 << 40))
            objects.append((f"model/{path.name}", path.stat().st_size))
        for path in ckpt.glob("*.json"):
            client.upload_file(str(path), s3.bucket, f"model/{path.name}")
        import boto3
        from botocore.config import Config

        proxied = boto3.client(  # URLs signed for the proxy's address, which is the Host the server sees
            "s3", endpoint_url=endpoint, region_name=s3.region, aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key, config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        urls = {k: proxied.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": k}, ExpiresIn=7200)
                for k, _ in objects}
        location = f"s3://{s3.bucket}/model"
        runai_env = {"RUNAI_STREAMER_S3_ENDPOINT": endpoint, "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
                     "AWS_EC2_METADATA_DISABLED": "true"}
        runai_paths = [f"s3://{s3.bucket}/{k}" for k, _ in objects]
        naive = {"endpoint": endpoint, "bucket": s3.bucket, "keys": [k for k, _ in objects], "scratch": str(work / "naive")}

        def runai(concurrency: int | None) -> dict:
            env = runai_env | ({"RUNAI_STREAMER_CONCURRENCY": str(concurrency)} if concurrency else {})
            return run_child("runai", {"paths": runai_paths}, env=env)

        toxi.shape("s3", shapes["clean"])
        if sweep_concurrency:
            results["warmscale_by_concurrency_clean"] = concurrency_sweep(
                sweep_concurrency, args.repeats, urls, objects, location, endpoint, warmscale_config)
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / "loader_shaped_concurrency.json").write_text(json.dumps(results, indent=1))
            (RESULTS / "loader_shaped_concurrency.md").write_text(render_sweep_md(results))
            print(render_sweep_md(results))
            return
        print("ceiling and runai concurrency sweep (clean) ...", flush=True)
        curl_by_streams: dict[int, float] = {}
        for n in (STREAMS // 2, STREAMS, STREAMS * 2, STREAMS * 4):
            r = raw_curl(urls, objects, n // len(objects))  # n connections in all, split over the shards
            curl_by_streams[n] = round(r["bytes"] / r["seconds"] / 1e9, 4)
            print(f"  curl {n:>2} streams  {curl_by_streams[n]:.3f} GB/s", flush=True)
        results["curl_by_streams_clean"] = curl_by_streams
        sweep = {}
        for c in RUNAI_SWEEP:
            r = runai(c)
            sweep[c] = round(r["bytes"] / r["seconds"] / 1e9, 4)
            print(f"  runai concurrency {c:>2}  {sweep[c]:.3f} GB/s", flush=True)
        best_runai = max(sweep, key=lambda c: sweep[c])
        results["runai_sweep_clean"] = sweep
        results["runai_best_concurrency"] = best_runai

        contenders = {
            "ceiling_curl": lambda: raw_curl(urls, objects, STREAMS // len(objects)),
            "warmscale": lambda: run_child("warmscale", {"location": location,
                                                         "config": warmscale_config | {"endpoint_url": endpoint}}),
            "runai_defaults": lambda: runai(None),
            "runai_best": lambda: runai(best_runai),
            "boto3_load_file": lambda: run_child("naive", naive),
        }
        scenarios: dict[str, dict] = {}
        for scenario in scenario_names:
            # toxiproxy 2.5.0 can panic (index out of range in ToxicLink.AddToxic) when toxics change while
            # links of the previous shape, a stalled one held 5 s say, are still open: let them close first.
            time.sleep(SETTLE_S)
            toxi.shape("s3", shapes[scenario])
            names = [n for n in contenders if n in contender_names and (n != "ceiling_curl" or scenario in ceiling_in)]
            names += ["warmscale_ring"] if scenario == "clean" and "warmscale_ring" in contender_names else []
            runs: dict[str, list[dict]] = {n: [] for n in names}
            print(f"{scenario} ...", flush=True)
            for _ in range(args.repeats):
                for name in names:
                    if name == "warmscale_ring":
                        cfg = warmscale_config | {"endpoint_url": endpoint, "direct_host_reads": False}
                        runs[name].append(run_child("warmscale", {"location": location, "config": cfg}))
                    else:
                        runs[name].append(contenders[name]())
            scenarios[scenario] = {n: summary(r) for n, r in runs.items()}
            for n, s in scenarios[scenario].items():
                print(f"  {n:<16} median {s['median_gb_per_s']:.3f} GB/s  [{s['min_gb_per_s']:.3f}, "
                      f"{s['max_gb_per_s']:.3f}]", flush=True)
        results["scenarios"] = scenarios
    shutil.rmtree(work / "naive", ignore_errors=True)
    results["ratios"], results["targets"] = ratios_and_targets(scenarios)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loader_shaped.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "loader_shaped.md").write_text(render_md(results))
    print(render_md(results))


SCENARIOS = ("clean", "stalls_2pct_5s", "slow_1_in_10")
CONTENDERS = ("ceiling_curl", "warmscale", "runai_defaults", "runai_best", "boto3_load_file", "warmscale_ring")


def _subset(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


def concurrency_sweep(concurrencies: list[int], repeats: int, urls: dict[str, str], objects: list[tuple[str, int]],
                      location: str, endpoint: str, config: dict) -> dict:
    """warmscale (host and ring path, default memory limit) at each concurrency next to curl with as many
    streams, interleaved run by run on the clean shape."""
    runs: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for c in concurrencies:
            runs.setdefault(f"curl_{c}", []).append(raw_curl(urls, objects, max(1, c // len(objects))))
            for path, direct in (("host", True), ("ring", False)):
                cfg = config | {"endpoint_url": endpoint, "concurrency": c, "direct_host_reads": direct}
                runs.setdefault(f"warmscale_{path}_{c}", []).append(
                    run_child("warmscale", {"location": location, "config": cfg}))
            print(f"  concurrency {c:>2}: curl {_rate(runs[f'curl_{c}'][-1]):.3f}  host "
                  f"{_rate(runs[f'warmscale_host_{c}'][-1]):.3f}  ring {_rate(runs[f'warmscale_ring_{c}'][-1]):.3f} GB/s",
                  flush=True)
    return {name: summary(r) for name, r in runs.items()}


def _rate(run: dict) -> float:
    return run["bytes"] / run["seconds"] / 1e9


def render_sweep_md(r: dict) -> str:
    sweep = r["warmscale_by_concurrency_clean"]
    shape = r["shape"]
    lines = [
        "# warmscale's concurrency on shaped object storage (clean shape)",
        "",
        f"Checkpoint: {r['checkpoint']['bytes'] / 1e9:.2f} GB, {r['checkpoint']['shards']} shards. Shape: "
        f"{shape['per_connection_mb_s']:g} MB/s per connection, {shape['first_byte_latency_ms']} ms first-byte latency. "
        f"Memory limit at its default; the range size follows from it and the concurrency. Each warmscale run sits "
        f"next to curl with as many parallel ranged GETs (same run, interleaved). Medians of {r['repeats']} runs, [min, max].",
        "",
        "| concurrency | curl GB/s | warmscale host GB/s | host range MiB | host memory / limit | warmscale ring GB/s "
        "| ring range MiB | ring memory / limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    concurrencies = sorted({int(k.rsplit("_", 1)[1]) for k in sweep})
    for c in concurrencies:
        curl, host, ring = sweep[f"curl_{c}"], sweep[f"warmscale_host_{c}"], sweep[f"warmscale_ring_{c}"]
        cell = lambda s: f"{s['median_gb_per_s']:.3f} [{s['min_gb_per_s']:.3f}, {s['max_gb_per_s']:.3f}]"  # noqa: E731
        mem = lambda s: f"{s['peak_rss_minus_held'] / s['memory_limit_bytes']:.2f}"  # noqa: E731
        lines.append(f"| {c} | {cell(curl)} | {cell(host)} | {host['range_bytes'] / 2**20:g} | {mem(host)} | "
                     f"{cell(ring)} | {ring['range_bytes'] / 2**20:g} | {mem(ring)} |")
    lines += ["", "Memory: peak RSS minus the tensor held at that moment, worst run, over the memory limit "
              "(target <= 1.15).", ""] + [f"- {note}" for note in r.get("notes", [])]
    return "\n".join(lines) + "\n"


def ratios_and_targets(scenarios: dict[str, dict]) -> tuple[dict, dict]:
    """Ratios and targets over what ran (a subset run leaves out those it cannot compute)."""
    clean = scenarios.get("clean", {})
    ratios: dict[str, float] = {}
    if "ceiling_curl" in clean:
        ceiling = clean["ceiling_curl"]["median_gb_per_s"]
        ratios |= {f"{scenario}:{name}_vs_clean_ceiling": round(s["median_gb_per_s"] / ceiling, 3)
                   for scenario, by_name in scenarios.items() for name, s in by_name.items()}
    if "warmscale" in clean and "runai_best" in clean:
        ratios["clean:warmscale_vs_runai_best"] = round(
            clean["warmscale"]["median_gb_per_s"] / clean["runai_best"]["median_gb_per_s"], 3)
    slowdown = {f"{scenario}:{name}_time_vs_clean": round(s["median_seconds"] / clean[name]["median_seconds"], 3)
                for scenario, by_name in scenarios.items() if scenario != "clean"
                for name, s in by_name.items() if name in clean}
    ratios |= slowdown
    memory = {}
    for name, path in (("warmscale", "host"), ("warmscale_ring", "ring")):
        if name in clean:
            memory[f"{path} path: peak RSS minus held tensors / limit"] = round(
                clean[name].get("peak_rss_minus_held", 0) / (clean[name].get("memory_limit_bytes") or 1), 3)
    ratios |= memory
    targets = {}
    if "clean:warmscale_vs_clean_ceiling" in ratios:
        targets["warmscale >= 0.9 x shaped ceiling (clean)"] = ratios["clean:warmscale_vs_clean_ceiling"] >= 0.9
    if "clean:warmscale_vs_runai_best" in ratios:
        targets["warmscale >= 1.5 x runai-model-streamer at its best concurrency"] = (
            ratios["clean:warmscale_vs_runai_best"] >= 1.5)
    warmscale_slowdown = [v for k, v in slowdown.items() if ":warmscale_" in k]
    if warmscale_slowdown:
        targets["warmscale time under stragglers <= 1.2 x its clean time"] = all(v <= 1.2 for v in warmscale_slowdown)
    for key, value in memory.items():
        targets[f"loader memory <= 1.15 x limit ({key.split(':')[0]})"] = value <= 1.15
    return ratios, targets


def _ceiling_scenarios_run(r: dict) -> list[str]:
    run = r.get("scenarios_run", SCENARIOS)
    return [s for s in r.get("ceiling_in", SCENARIOS) if s in run]


def render_md(r: dict) -> str:
    shape = r["shape"]
    lines = [
        "# Weight loading from shaped object storage (versitygw behind toxiproxy)",
        "",
        f"Checkpoint: {r['checkpoint']['bytes'] / 1e9:.2f} GB, {r['checkpoint']['shards']} shards. Shape: "
        f"{shape['per_connection_mb_s']:g} MB/s per connection, {shape['first_byte_latency_ms']} ms first-byte "
        f"latency; the ceiling is curl with {shape['ceiling_streams']} parallel ranged GETs through the same proxy "
        f"(aggregate {shape['aggregate_mb_s']:g} MB/s by design). Medians of {r['repeats']} runs, [min, max].",
        "",
        f"curl by parallel streams (clean): {r['curl_by_streams_clean']}; runai-model-streamer by concurrency (clean): "
        f"{r['runai_sweep_clean']} -> best {r['runai_best_concurrency']}",
        "",
        f"This run: scenarios {', '.join(r.get('scenarios_run', SCENARIOS))}; contenders "
        f"{', '.join(r.get('contenders_run', CONTENDERS))} (the curl ceiling in {', '.join(_ceiling_scenarios_run(r))})"
        + (f"; warmscale settings {r['warmscale_config']}" if r.get("warmscale_config") else "") + ".",
        "",
        "| scenario | contender | median GB/s | min | max | median s | vs clean ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario, by_name in r["scenarios"].items():
        for name, s in by_name.items():
            lines.append(f"| {scenario} | {name} | {s['median_gb_per_s']:.3f} | {s['min_gb_per_s']:.3f} | "
                         f"{s['max_gb_per_s']:.3f} | {s['median_seconds']:.2f} | "
                         f"{r['ratios'].get(f'{scenario}:{name}_vs_clean_ceiling', float('nan')):.3f} |")
    lines += ["", "| scenario | warmscale path | range MiB | hedges (most in a run) | hedge wins (median run) "
                  "| losers aborted (median run) |", "|---|---|---|---|---|---|"]
    for scenario, by_name in r["scenarios"].items():
        for name in ("warmscale", "warmscale_ring"):
            s = by_name.get(name)
            if s and "range_bytes" in s:
                lines.append(f"| {scenario} | {'host' if name == 'warmscale' else 'ring'} | {s['range_bytes'] / 2**20:g} | "
                             f"{s.get('hedges', '')} | {s.get('hedge_wins', '')} | {s.get('losers_aborted', '')} |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["ratios"].items() if "_vs_clean_ceiling" not in k]
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'no'} |" for k, v in r["targets"].items()]
    lines += ["", "## Reading these numbers", ""] + [f"- {note}" for note in NOTES + r.get("notes", [])]
    return "\n".join(lines) + "\n"


NOTES = [
    "toxiproxy shapes each connection (its toxics are drawn per connection) and has no aggregate cap: the "
    "aggregate is the per-connection rate times the ceiling's connections. A contender that opens more "
    "connections can pass it; how far this machine can go through the proxy at all shows in curl by streams.",
    "Per connection this is slower than AWS's own guidance for S3 (about 85-90 MB/s per connection), so that "
    "the aggregate stays well below what server, proxy and client can move on these 2 shared cores; the "
    "first-byte latency is of the order S3 Standard shows for GETs within a region (tens of ms).",
    "Stalls: 2 % of connections hold every response another 5 s. Clients keep connections alive, so about 2 % "
    "of ranges stall, more when a client reuses a stalled connection for many ranges. Slow: one connection in "
    "ten also passes through a bandwidth toxic at a tenth of the rate.",
    "Each contender runs in its own process, runs are interleaved (one of each, then again); each consumer "
    "touches a byte of every page of every tensor and drops it. Memory: peak RSS minus the tensor held at "
    "that moment, worst run, against warmscale's memory limit.",
]


if __name__ == "__main__":
    main()
