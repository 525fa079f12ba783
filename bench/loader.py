"""Weight-loading benchmark: warmscale against the server's raw ceiling, Run:ai Model Streamer and
the naive path, from a loopback S3 server (versitygw) and from a local file, into host memory.

    .venv/bin/python bench/loader.py [--size 3GB] [--shards 2] [--repeats 3] [--no-sweep]

Writes bench/results/loader.json and bench/results/loader.md. Every contender runs in its own
process (clean peak-RSS numbers). Each consumer touches one byte per page of every tensor it is
handed (so mmap-backed tensors count as loaded) and drops it, as vLLM's weight loader does after
copying it into the model. The machine has 2 cores: the S3 server and the client share them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "tmp" / "loader"
MiB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def touch(tensor) -> None:  # noqa: ANN001 - torch.Tensor
    """Read one byte per 4 KiB page, so lazily mapped tensors are really in memory."""
    import torch

    flat = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else None
    if flat is not None:
        flat[::4096].sum()


# --------------------------------------------------------------------------- children


class HeldMemorySampler:
    """Samples RSS every few ms and keeps the peak of RSS minus the bytes the consumer holds then.

    On a CPU target the destination tensors are host memory too, so RSS includes whatever the
    consumer keeps; what is left is the loader's own overhead (staging, read-ahead, tensors still
    being assembled), which is what the memory limit bounds.
    """

    def __init__(self, base: int, period_s: float = 0.005) -> None:
        import threading

        self.base, self.period_s = base, period_s
        self.held = 0
        self.peak_over_held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak_over_held = max(self.peak_over_held, rss_bytes() - self.base - self.held)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> HeldMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def child_warmscale(args: dict) -> dict:
    from loader.config import LoaderConfig
    from loader.stream import LoadReport, stream_checkpoint

    config = LoaderConfig(**args["config"])
    report = LoadReport(location=args["location"])
    base = rss_bytes()
    started = time.perf_counter()
    with HeldMemorySampler(base) as sampler:
        for _, tensor in stream_checkpoint(args["location"], "cpu", config, report=report):
            sampler.held = tensor.numel() * tensor.element_size()
            touch(tensor)
            del tensor
            sampler.held = 0
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": report.bytes, "base_rss": base, "retries": report.fetch.retries,
            "hedges": report.fetch.hedges, "hedge_wins": report.fetch.hedge_wins,
            "losers_aborted": report.fetch.losers_aborted, "range_bytes": config.effective_range_bytes,
            "requests": report.fetch.requests,
            "peak_rss_minus_held": sampler.peak_over_held, "memory_limit_bytes": config.memory_limit_bytes,
            "recycled_bytes": report.recycled_bytes}


def child_runai(args: dict) -> dict:
    from runai_model_streamer import SafetensorsStreamer

    base = rss_bytes()
    total = 0
    started = time.perf_counter()
    with SafetensorsStreamer() as streamer:
        streamer.stream_files(args["paths"])
        for _, tensor in streamer.get_tensors():
            touch(tensor)
            total += tensor.numel() * tensor.element_size()
    return {"seconds": time.perf_counter() - started, "bytes": total, "base_rss": base}


def child_naive(args: dict) -> dict:
    """What a user writes by hand: boto3 download_file (its transfer manager), then load_file."""
    import boto3
    from safetensors.torch import load_file

    base = rss_bytes()
    client = boto3.client("s3", endpoint_url=args["endpoint"])
    dest = Path(args["scratch"])
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    started = time.perf_counter()
    for key in args["keys"]:
        local = dest / Path(key).name
        client.download_file(args["bucket"], key, str(local))
        for tensor in load_file(local).values():
            touch(tensor)
            total += tensor.numel() * tensor.element_size()
    seconds = time.perf_counter() - started
    shutil.rmtree(dest, ignore_errors=True)
    return {"seconds": seconds, "bytes": total, "base_rss": base}


def child_load_file(args: dict) -> dict:
    from safetensors.torch import load_file

    base = rss_bytes()
    total = 0
    started = time.perf_counter()
    for path in args["paths"]:
        for tensor in load_file(path).values():
            touch(tensor)
            total += tensor.numel() * tensor.element_size()
    return {"seconds": time.perf_counter() - started, "bytes": total, "base_rss": base}


def child_raw_python(args: dict) -> dict:
    """Parallel ranged GETs through the same socket path warmscale uses, into small reused buffers."""
    import threading

    from loader.sources.s3 import S3Source

    source = S3Source(args["root"], endpoint_url=args["endpoint"], max_connections=64)
    rb = args["range_bytes"]
    local = threading.local()
    jobs = [(key, off, min(rb, size - off)) for key, size in args["objects"] for off in range(0, size, rb)]

    def get(job: tuple[str, int, int]) -> None:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = memoryview(bytearray(rb))
        source.read_into(job[0], job[1], buf[: job[2]], None)

    started = time.perf_counter()
    with ThreadPoolExecutor(args["concurrency"]) as pool:
        list(pool.map(get, jobs))
    return {"seconds": time.perf_counter() - started, "bytes": sum(j[2] for j in jobs), "base_rss": rss_bytes()}


def child_first_touch(args: dict) -> dict:
    """How fast this machine hands out fresh host memory: write every page of new 8 MiB buffers.

    Any loader that lands bytes in new host memory pays this; the raw GET ceilings, which read
    into small reused buffers, do not.
    """
    import numpy as np

    block = np.full(8 * MiB, 7, dtype=np.uint8)
    keep = []
    started = time.perf_counter()
    for _ in range(args["bytes"] // (8 * MiB)):
        buf = np.empty(8 * MiB, dtype=np.uint8)
        buf[:] = block
        keep.append(buf)
    return {"seconds": time.perf_counter() - started, "bytes": len(keep) * 8 * MiB, "base_rss": 0}


CHILDREN = {"first_touch": child_first_touch, "warmscale": child_warmscale, "runai": child_runai, "naive": child_naive, "load_file": child_load_file,
            "raw_python": child_raw_python}


def run_child(kind: str, args: dict, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(kind: str, payload: str) -> None:
    result = CHILDREN[kind](json.loads(payload))
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["rss_over_base"] = result["peak_rss"] - result["base_rss"]
    print(json.dumps(result))


# --------------------------------------------------------------------------- measurements


def raw_curl(url_for: dict[str, str], objects: list[tuple[str, int]], streams: int) -> dict:
    """The server's ceiling seen by a C client: `streams` parallel curl range GETs to /dev/null."""
    started = time.perf_counter()
    procs = []
    for key, size in objects:
        part = -(-size // streams)
        for off in range(0, size, part):
            procs.append(subprocess.Popen(
                ["curl", "-sf", "-o", "/dev/null", "-r", f"{off}-{min(size, off + part) - 1}", url_for[key]]))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"curl failed: {codes}")
    return {"seconds": time.perf_counter() - started, "bytes": sum(s for _, s in objects)}


def drop_page_cache(paths: list[Path]) -> str:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "posix_fadvise(DONTNEED) per file"


def median_run(runs: list[dict]) -> dict:
    """The run of median speed (the lower middle one of an even count), with every run's GB/s and
    their range; memory is the worst run's."""
    rate = lambda r: r["bytes"] / r["seconds"] / 1e9  # noqa: E731
    by_rate = sorted(runs, key=rate)
    out = dict(by_rate[(len(by_rate) - 1) // 2])
    out["gb_per_s"] = rate(out)
    out["runs_gb_per_s"] = [round(rate(r), 3) for r in runs]
    out["min_gb_per_s"], out["max_gb_per_s"] = round(rate(by_rate[0]), 4), round(rate(by_rate[-1]), 4)
    for key in ("rss_over_base", "peak_rss_minus_held", "hedges", "memory_limit_bytes"):
        if all(key in r for r in runs):
            out[key] = max(r[key] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3GB")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return

    from loader.cli import parse_size
    from loader.config import LoaderConfig
    from loader.make_checkpoint import CheckpointSpec, make_checkpoint
    from tests.ground.s3 import start_s3_server

    size = parse_size(args.size)
    ckpt = WORK / f"ckpt-{size}-{args.shards}"
    if not ckpt.exists():
        print(f"making a {size / 1e9:.1f} GB checkpoint in {ckpt} ...", flush=True)
        make_checkpoint(ckpt, CheckpointSpec(total_bytes=size, shards=args.shards))
    shards = sorted(ckpt.glob("*.safetensors"))
    total_bytes = sum(p.stat().st_size for p in shards)
    from loader.checkpoint import resolve_checkpoint
    from loader.sources import LocalSource

    largest = max(t.nbytes for s in resolve_checkpoint(LocalSource(ckpt)).shards for t in s.header.tensors)
    defaults = LoaderConfig()
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "checkpoint": {"bytes": total_bytes, "shards": len(shards), "made_by": "warmscale-loader make-checkpoint",
                       "largest_tensor_bytes": largest},
        "defaults": defaults.model_dump(mode="json"),
        "note": "2 cores shared by the S3 server (versitygw) and the client; other work may run on the machine.",
    }
    s3_dir = WORK / "s3"
    shutil.rmtree(s3_dir, ignore_errors=True)
    with start_s3_server(s3_dir, bucket="bench") as s3:
        os.environ.update(s3.env())
        client = s3.client()
        from boto3.s3.transfer import TransferConfig

        keys = []
        for path in sorted(ckpt.iterdir()):
            key = f"model/{path.name}"
            client.upload_file(str(path), s3.bucket, key, Config=TransferConfig(multipart_threshold=1 << 40))
            keys.append(key)
        objects = [(f"model/{p.name}", p.stat().st_size) for p in shards]
        location = f"s3://{s3.bucket}/model"
        presign = s3.client(signature_version="s3v4")
        urls = {k: presign.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": k}, ExpiresIn=3600)
                for k, _ in objects}
        runai_env = {"RUNAI_STREAMER_S3_ENDPOINT": s3.endpoint_url, "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
                     "AWS_EC2_METADATA_DISABLED": "true"}

        def log(name: str, r: dict) -> None:
            print(f"  {name:<28} {r['gb_per_s']:.3f} GB/s  runs {r['runs_gb_per_s']}  "
                  f"rss+{r.get('rss_over_base', 0) / MiB:.0f} MiB", flush=True)

        s3_results: dict[str, dict] = {}
        print("raw ceiling ...", flush=True)
        curl = {n: median_run([raw_curl(urls, objects, n) for _ in range(args.repeats)]) for n in (1, 2, 4)}
        py = {
            f"c{c}-r{rb >> 20}": median_run([run_child("raw_python", {"root": f"s3://{s3.bucket}", "endpoint": s3.endpoint_url,
                                                                "objects": objects, "range_bytes": rb, "concurrency": c})
                                       for _ in range(args.repeats)])
            for c, rb in ((4, 32 * MiB), (8, 16 * MiB))
        }
        s3_results["raw_curl"] = max(curl.values(), key=lambda r: r["gb_per_s"]) | {"by_streams": {k: v["gb_per_s"] for k, v in curl.items()}}
        s3_results["raw_python"] = max(py.values(), key=lambda r: r["gb_per_s"]) | {"by_setting": {k: v["gb_per_s"] for k, v in py.items()}}
        log("raw ceiling (curl)", s3_results["raw_curl"])
        log("raw ceiling (python)", s3_results["raw_python"])
        s3_results["host_memory_first_touch"] = median_run([run_child("first_touch", {"bytes": min(total_bytes, 2 << 30)})
                                                      for _ in range(args.repeats)])
        log("fresh host memory (first touch)", s3_results["host_memory_first_touch"])

        if not args.no_sweep:
            print("sweep (concurrency x range size) ...", flush=True)
            sweep = {}
            for conc in (4, 8, 16):
                for rb in (8 * MiB, 16 * MiB, 32 * MiB):
                    cfg = {"concurrency": conc, "range_bytes": rb}
                    r = median_run([run_child("warmscale", {"location": location, "config": cfg})])
                    sweep[f"c{conc}-r{rb >> 20}MiB"] = round(r["gb_per_s"], 3)
                    print(f"  c={conc:<3} range={rb >> 20:>3} MiB  {r['gb_per_s']:.3f} GB/s", flush=True)
            results["sweep"] = sweep

        print("contenders ...", flush=True)
        s3_results["warmscale"] = median_run([run_child("warmscale", {"location": location, "config": {}})
                                        for _ in range(args.repeats)])
        log("warmscale", s3_results["warmscale"])
        ring_cfg = {"direct_host_reads": False, "memory_limit_bytes": 256 * MiB}
        s3_results["warmscale_ring_256MiB"] = median_run([run_child("warmscale", {"location": location, "config": ring_cfg})
                                                    for _ in range(args.repeats)])
        log("warmscale (ring, 256 MiB)", s3_results["warmscale_ring_256MiB"])
        fresh_cfg = {"recycle_pages": False, "huge_pages": False}
        s3_results["warmscale_fresh_pages"] = median_run([run_child("warmscale", {"location": location, "config": fresh_cfg})
                                                    for _ in range(args.repeats)])
        log("warmscale (fresh 4 KiB pages)", s3_results["warmscale_fresh_pages"])
        prefault_cfg = {"prefault_window_bytes": 64 * MiB}
        s3_results["warmscale_prefault_64MiB"] = median_run([run_child("warmscale", {"location": location, "config": prefault_cfg})
                                                       for _ in range(args.repeats)])
        log("warmscale (prefault 64 MiB)", s3_results["warmscale_prefault_64MiB"])
        s3_results["runai_model_streamer"] = median_run([
            run_child("runai", {"paths": [f"s3://{s3.bucket}/{k}" for k, _ in objects]}, env=runai_env)
            for _ in range(args.repeats)])
        log("runai-model-streamer", s3_results["runai_model_streamer"])
        s3_results["boto3_download_then_load_file"] = median_run([
            run_child("naive", {"endpoint": s3.endpoint_url, "bucket": s3.bucket, "keys": [k for k, _ in objects],
                                "scratch": str(WORK / "naive")}) for _ in range(args.repeats)])
        log("boto3 + load_file", s3_results["boto3_download_then_load_file"])
        results["s3"] = s3_results
    shutil.rmtree(s3_dir, ignore_errors=True)  # the server's copy of the checkpoint; the checkpoint stays

    print("local file ...", flush=True)
    local: dict[str, dict] = {}
    paths = [str(p) for p in shards]
    for state in ("page_cached", "cold"):
        for name, kind, payload in (
            ("warmscale", "warmscale", {"location": str(ckpt), "config": {}}),
            ("safetensors_load_file", "load_file", {"paths": paths}),
        ):
            runs = []
            for _ in range(args.repeats):
                if state == "cold":
                    local["cold_method"] = drop_page_cache(shards)  # type: ignore[assignment]
                else:
                    run_child("load_file", {"paths": paths})  # warm the page cache
                runs.append(run_child(kind, payload))
            local[f"{name}_{state}"] = median_run(runs)
            log(f"{name} ({state})", local[f"{name}_{state}"])
    results["local"] = local

    judge(results)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / "loader.md").write_text(render_md(results))
    print(render_md(results))


def judge(results: dict) -> None:
    """Ratios against the ceilings and peers of the same run, and the targets met."""
    local = results["local"]
    s3r = results["s3"]
    ceiling = max(s3r["raw_curl"]["gb_per_s"], s3r["raw_python"]["gb_per_s"])
    ws = s3r["warmscale"]["gb_per_s"]
    ring = s3r["warmscale_ring_256MiB"]
    results["ratios"] = {
        "warmscale_vs_raw_ceiling": round(ws / ceiling, 3),
        "warmscale_vs_raw_python_ceiling": round(ws / s3r["raw_python"]["gb_per_s"], 3),
        "warmscale_vs_runai": round(ws / s3r["runai_model_streamer"]["gb_per_s"], 3),
        "warmscale_vs_naive": round(ws / s3r["boto3_download_then_load_file"]["gb_per_s"], 3),
        "warmscale_vs_first_touch_ceiling": round(ws / s3r["host_memory_first_touch"]["gb_per_s"], 3),
        "defaults_overhead_over_limit": round(s3r["warmscale"]["peak_rss_minus_held"] / s3r["warmscale"]["memory_limit_bytes"], 3),
        "ring_overhead_over_limit": round(ring["peak_rss_minus_held"] / ring["memory_limit_bytes"], 3),
        "defaults_peak_rss_over_limit": round(s3r["warmscale"]["rss_over_base"] / s3r["warmscale"]["memory_limit_bytes"], 3),
        "ring_peak_rss_over_limit": round(ring["rss_over_base"] / ring["memory_limit_bytes"], 3),
        "local_cached_vs_load_file": round(local["warmscale_page_cached"]["gb_per_s"] / local["safetensors_load_file_page_cached"]["gb_per_s"], 3),
        "local_cold_vs_load_file": round(local["warmscale_cold"]["gb_per_s"] / local["safetensors_load_file_cold"]["gb_per_s"], 3),
    }
    results["targets"] = {
        "warmscale >= 0.85 x raw ceiling": results["ratios"]["warmscale_vs_raw_ceiling"] >= 0.85,
        "warmscale >= 1.5 x runai-model-streamer": results["ratios"]["warmscale_vs_runai"] >= 1.5,
        "warmscale >= 3 x boto3 + load_file": results["ratios"]["warmscale_vs_naive"] >= 3,
        "peak RSS minus held tensors <= 1.15 x memory limit (defaults)": results["ratios"]["defaults_overhead_over_limit"] <= 1.15,
        "peak RSS minus held tensors <= 1.15 x memory limit (256 MiB ring)": results["ratios"]["ring_overhead_over_limit"] <= 1.15,
    }


CONTENDER_TABLE_HEAD = (
    "| contender | GB/s | seconds | runs GB/s | peak RSS over start (MiB) | peak RSS over start minus held tensors (MiB) |",
    "|---|---|---|---|---|---|",
)


def render_md(r: dict) -> str:
    s3, local, ratios = r["s3"], r["local"], r["ratios"]
    gb = r["checkpoint"]["bytes"] / 1e9

    def row(name: str, x: dict) -> str:
        held = f"{x['peak_rss_minus_held'] / MiB:.0f}" if "peak_rss_minus_held" in x else "-"
        return (f"| {name} | {x['gb_per_s']:.3f} | {x['seconds']:.2f} | {', '.join(map(str, x['runs_gb_per_s']))} | "
                f"{x.get('rss_over_base', 0) / MiB:.0f} | {held} |")

    lines = [
        "# Weight loading: warmscale vs the raw ceiling, Run:ai Model Streamer and the naive path", "",
        f"Checkpoint: {gb:.2f} GB random-weight BF16 safetensors, {r['checkpoint']['shards']} shards, made by "
        "`warmscale-loader make-checkpoint`. Server: versitygw on 127.0.0.1 (the test ground's S3 server). "
        f"Machine: {r['machine']['cpus']} cores shared by server and client (and by other work: load average "
        f"{r['machine']['load_average_at_start'][0]:.1f} at start, {r['machine']['load_average_at_end'][0]:.1f} at end). "
        "Median of the runs listed (GB/s and seconds of the median run; memory of the worst); each contender in a fresh process; consumers touch every page and drop each tensor.", "",
        "## From S3 (loopback) into host memory", "",
        *CONTENDER_TABLE_HEAD,
        row("raw ceiling: curl range GETs to /dev/null", s3["raw_curl"]),
        row("raw ceiling: Python ranged GETs, bytes discarded", s3["raw_python"]),
        row("fresh host memory, first touch (no network)", s3["host_memory_first_touch"]),
        row("**warmscale** (defaults)", s3["warmscale"]),
        row("warmscale, fresh 4 KiB pages for every tensor (page recycling and huge pages off)", s3["warmscale_fresh_pages"]),
        row("warmscale, 256 MiB staging ring", s3["warmscale_ring_256MiB"]),
        row("warmscale, pages prefaulted 64 MiB ahead (within the 256 MiB limit)", s3["warmscale_prefault_64MiB"]),
        row("runai-model-streamer", s3["runai_model_streamer"]),
        row("boto3 download_file + safetensors.load_file", s3["boto3_download_then_load_file"]),
        "", f"curl by parallel streams: {s3['raw_curl']['by_streams']}; Python ceiling by setting: {s3['raw_python']['by_setting']}", "",
        "## From a local file", "",
        *CONTENDER_TABLE_HEAD,
        row("warmscale, page-cached", local["warmscale_page_cached"]),
        row("safetensors.load_file, page-cached (mmap: maps cached pages, copies nothing)", local["safetensors_load_file_page_cached"]),
        row("warmscale, cold", local["warmscale_cold"]),
        row("safetensors.load_file, cold", local["safetensors_load_file_cold"]),
        "", f"Cold = {local.get('cold_method', '')} before each run.", "",
        "## Ratios and targets", "", "| ratio | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in ratios.items()], "",
        "| target | met |", "|---|---|", *[f"| {k} | {'yes' if v else 'no'} |" for k, v in r["targets"].items()],
    ]
    lines += ["", "## Reading these numbers", "",
              "- The raw ceilings read into small reused buffers; every loader lands its bytes in new host memory, "
              "and on this VM the first pass over fresh guest memory is slow (compare the two 'first touch' runs). "
              "Which run pays that depends on what ran before, so runs of one contender can differ by 2-4x, and "
              "the sweep's single runs are noisier than the contenders' medians.",
              "- Memory: a CPU target's destination tensors are host memory too, so raw RSS includes whatever the "
              "consumer keeps. 'Peak RSS over start minus held tensors' subtracts the tensor the consumer holds at that "
              "moment (sampled every 5 ms; each is dropped after it is touched): what is left is the loader's overhead "
              "(read-ahead, staging ring, tensors still being assembled, client buffers), which the memory limit "
              "(256 MiB by default) bounds. Memory figures are the worst run, speed the median run.",
              "- 'warmscale (defaults)' reads ranges straight into the tensors' host memory (no staging copy). "
              "At most memory-limit / range-size ranges are read ahead of the consumer, and a range's lease is held "
              "until every tensor it feeds is handed over, so partly assembled tensors count against the limit too "
              "(the lease count is raised to fit the largest tensor). When the consumer drops a tensor, its pages "
              "are moved (mremap) to where the next reads land instead of being freed, so later tensors do not "
              "pay first-touch page faults "
              f"({s3['warmscale'].get('recycled_bytes', 0) / 1e9:.2f} GB moved in the median run); a quarter of the "
              "limit may wait there, taken from the read-ahead budget. Destination mappings also ask for "
              "transparent huge pages. 'fresh 4 KiB pages' turns both off.",
              "- The ring variant copies through a bounded ring (the GPU path) and also holds the tensors being "
              "assembled.",
              "- 'prefaulted' faults the destination pages in on a helper thread ahead of the reads "
              "(MADV_POPULATE_WRITE), the window taken from the same memory limit as the read-ahead. Off by default: "
              "with page recycling there is little left for it to do, and on 2 cores shared with the server the "
              "helper's page zeroing takes CPU from it.",
              "- What the limit does not cover: the client itself (boto3's S3 client with its service model is "
              "about 22 MiB), thread stacks and the interpreter's allocations during the load.",
              "- Local files onto the CPU are mapped copy-on-write (as safetensors.load_file does) rather than read.",
              "- Server and client share 2 cores: the client's CPU time is taken from the server's."]
    if "sweep" in r:
        lines += ["", "## Sweep: warmscale GB/s by concurrency and range size (one run each)", "",
                  " ".join(f"`{k}`: {v}" for k, v in r["sweep"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
