"""Reading a staged checkpoint back from the node's disk: the kernel's readahead against an advised window.

    flock /work/coord/bench.lock .venv/bin/python bench/pool_read.py [--size 2GB] [--shards 2] [--runs 5]

A warm-pool copy (or any local directory) is mapped, not read (loader/mapped.py), so its bytes come
from disk when the consumer first touches them. The kernel reads a mapping ahead one stream at a
time; the loader also advises a window ahead of the tensor it hands out (`local_readahead_bytes`).
Each run drops the checkpoint's page cache (bench/loader.py's posix_fadvise DONTNEED), then runs `warmscale-loader
pull DIR --json` as a user would (its consumer touches every page), with the window at its default
and at 0 (the kernel alone), interleaved run by run. Writes bench/results/pool_read.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "tmp" / "pool_read"

from bench.coldstart import build_checkpoint, load_bench_loader  # noqa: E402
from loader.cli import parse_size  # noqa: E402
from loader.config import LoaderConfig  # noqa: E402

ARMS = {"advised window (default)": None, "kernel readahead only (0)": 0}


def pull_seconds(directory: Path, window: int | None) -> float:
    env = dict(os.environ)
    if window is not None:
        env["WARMSCALE_LOADER_LOCAL_READAHEAD_BYTES"] = str(window)
    load_bench_loader().drop_page_cache(sorted(directory.glob("*.safetensors")))
    done = subprocess.run([sys.executable, "-m", "loader.cli", "pull", str(directory), "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["mapped"], "the pull did not take the mapped path"
    return float(result["seconds"])


def summary(seconds: list[float], size: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"median_s": round(median, 3), "min_s": round(min(seconds), 3), "max_s": round(max(seconds), 3),
            "median_gb_per_s": round(size / median / 1e9, 3), "runs": [round(s, 3) for s in seconds]}


def write(out: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pool_read.json").write_text(json.dumps(out, indent=2) + "\n")
    arms = out["arms"]
    lines = [
        "# Reading a staged checkpoint from the node's disk (bench/pool_read.py)", "",
        f"{out['checkpoint_gb']} GB (BF16) in {out['shards']} shards on {out['machine']}; page cache dropped before "
        f"each run; `warmscale-loader pull DIR --json`, every page touched; {out['runs']} runs per arm, interleaved; "
        "medians with [min-max].", "",
        "| arm | seconds | GB/s |", "|---|---|---|",
        *[f"| {name} | {a['median_s']} [{a['min_s']}-{a['max_s']}] | {a['median_gb_per_s']} |"
          for name, a in arms.items()],
        "", f"Ratio (kernel only / advised window, median seconds): **{out['ratio']}x** "
        f"(window {out['window_bytes'] // (1 << 20)} MiB).", "",
    ]
    (RESULTS / "pool_read.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="2GB")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    directory = WORK / "checkpoint"  # the ladder's checkpoint (bench/coldstart.py), kept between runs
    size = build_checkpoint(directory, parse_size(args.size), "BF16", args.shards)["bytes"]
    seconds: dict[str, list[float]] = {name: [] for name in ARMS}
    for run in range(args.runs):
        for name, window in ARMS.items():
            seconds[name].append(pull_seconds(directory, window))
            print(f"run {run} {name}: {seconds[name][-1]:.3f} s", flush=True)
    arms = {name: summary(s, size) for name, s in seconds.items()}
    ratio = arms["kernel readahead only (0)"]["median_s"] / arms["advised window (default)"]["median_s"]
    out = {"bench": "pool_read", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": args.runs,
           "checkpoint_gb": round(size / 1e9, 2), "shards": args.shards,
           "window_bytes": LoaderConfig().local_readahead_bytes, "arms": arms, "ratio": round(ratio, 2)}
    write(out)
    print(json.dumps({"ratio": out["ratio"], **{k: v["median_s"] for k, v in arms.items()}}))


if __name__ == "__main__":
    main()
