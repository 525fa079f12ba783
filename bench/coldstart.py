"""The cold-start ladder: from the scale decision to the first token served, on the real vLLM engine.

    .venv/bin/python bench/coldstart.py [--size 2GB] [--runs 3] [--tiers a_cold,a_warm,b,c,d,e,f,g]
    .venv/bin/python bench/coldstart.py --quick        # one run of each tier on a 300 MB checkpoint

Each start begins at the bench's own t0 (the moment a scaler decides to add a replica) and ends when
one completion has come back. In between, the engine's output lines are time-stamped as they arrive
(the engine writes them unbuffered into a pipe the bench reads), and the stages are the gaps between
consecutive events:

    fetch       t0 -> spawn         what happens before the process starts (boto3 download in tier b)
    process     spawn -> banner     interpreter start, vLLM import, argument parsing (API banner)
    engine      banner -> load      engine-core process, platform and model construction
    weights     load -> loaded      model construction, the load format's weight loading and the
                                    repacking for the kernels ("Starting to load model" in the worker to
                                    the engine core's next line, or the GPU runner's "Model loading took")
    warmup      loaded -> init      KV-cache profiling and allocation, compile warm-up
    ready       init -> health 200  API server start after the engine is up
    first_token health -> reply     one 1-token completion

The stages are consecutive, so they add up to the total exactly when every event was found in order;
a run where one is missing or out of order fails the check (``stages_add_up``), which compares their
sum with the wall-clock total within 10 %.

Tiers (issue 14): a_cold / a_warm: vLLM's default loader from a local directory with the page cache
dropped (posix_fadvise DONTNEED per file, as bench/loader.py does) or warm; b: boto3 download from S3,
then the default loader; c: ``--load-format runai_streamer`` from S3; d: ``--load-format warmscale``
from S3; e: warmscale from the node warm pool (staged with ``warmscale-loader warm`` before t0, page
cache dropped; e_warm: the same with the pool's files in the page cache, as a pool on /dev/shm); f_cold / f_staged: torch.compile on (no -O0) with an empty VLLM_CACHE_ROOT against one
staged from an earlier start; g: ``--enable-sleep-mode`` (refused on CPU: the error is the result).

Tiers are interleaved run by run. The S3 server (versitygw) is on loopback and serves from this
machine's disk and page cache, sharing its CPUs with the engine. ``--device cuda`` runs the same
ladder on a GPU host (no CPU-only environment, larger KV settings left to vLLM's defaults).
Writes bench/results/coldstart_ladder.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "tmp" / "coldstart"
PY = sys.executable
LOGS = [WORK / "logs"]  # per run: WORK / "logs" / <result file name>

STAGES = ("fetch", "process", "engine", "weights", "warmup", "ready", "first_token")
# (event, pattern) in the order the events happen; each is matched on the first line at or after the
# previous event's line.
MARKERS = (
    ("banner", re.compile(r"vLLM server version|vLLM API server version")),
    ("load", re.compile(r"Starting to load model")),
    ("init", re.compile(r"init engine \(profile, create kv cache, warmup model\) took")),
)
# The end of loading: no loader prints a line when it is done (vLLM's default loader prints its own
# time before the weights are repacked for the CPU kernels; Run:ai's streamer prints nothing through
# vLLM), so "loaded" is the first vLLM line, after "Starting to load model", from another process than
# the loading worker (the engine core resuming: KV-cache sizing), or one of these lines (a GPU runner
# in the engine-core process prints "Model loading took").
POST_LOAD = re.compile(r"Model loading took|KV cache|Reducing Torch threads|Memory profiling|init engine \(")
ENGINE_LINE = re.compile(r"^\((?P<name>[^()\s]+) pid=(?P<pid>\d+)\) (INFO|WARNING|ERROR|DEBUG) \d\d-\d\d \d\d:\d\d")
SLEEP_ERROR = re.compile(r"Sleep mode is not supported on current platform\.")


def load_bench_loader():
    """bench/loader.py (its name clashes with the ``loader`` package, so it is imported by path)."""
    spec = importlib.util.spec_from_file_location("bench_loader", ROOT / "bench" / "loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- log-line stage parsing


def find_events(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Event times from time-stamped engine output lines (``(seconds since t0, text)``).

    ``banner``, ``load`` and ``init`` are the first lines matching their markers, in order. ``loaded``
    is the first vLLM line after ``load`` from another process than the loading worker, or one that
    marks what follows loading (see POST_LOAD).
    """
    events: dict[str, float] = {}
    start = 0
    for name, pattern in MARKERS:
        for i in range(start, len(lines)):
            if pattern.search(lines[i][1]):
                events[name] = lines[i][0]
                start = i
                break
        else:
            break
        if name == "load":
            loader = ENGINE_LINE.search(lines[i][1])
            loader_pid = loader.group("pid") if loader else None
            for j in range(i + 1, len(lines)):
                text = lines[j][1]
                tag = ENGINE_LINE.search(text)
                if tag and (tag.group("pid") != loader_pid or POST_LOAD.search(text)):
                    events["loaded"] = lines[j][0]
                    # The loader's last line (its own report, a progress bar closing): after it, the
                    # weights are repacked for the kernels and the engine core resumes.
                    events["read_end"] = lines[j - 1][0] if j - 1 > i else lines[i][0]
                    start = j
                    break
            else:
                break
    return events


def stage_times(events: dict[str, float]) -> dict[str, float | None]:
    """Stage durations from event times (seconds since t0): ``spawn``, ``banner``, ``load``, ``loaded``,
    ``init``, ``health``, ``token``. A stage whose end or start is missing is None."""
    order = ("t0", "spawn", "banner", "load", "loaded", "init", "health", "token")
    times = {"t0": 0.0, **events}
    out: dict[str, float | None] = {}
    for stage, (a, b) in zip(STAGES, zip(order, order[1:])):
        out[stage] = round(times[b] - times[a], 3) if a in times and b in times else None
    if all(k in times for k in ("load", "read_end", "loaded")):  # the weights stage, split (not in the sum)
        out["weights_read"] = round(times["read_end"] - times["load"], 3)
        out["weights_after_read"] = round(times["loaded"] - times["read_end"], 3)
    return out


def stages_add_up(stages: dict[str, float | None], total: float, tolerance: float = 0.10) -> bool:
    """Every stage measured, none negative, and their sum within ``tolerance`` of the total."""
    values = [stages.get(s) for s in STAGES]
    if any(v is None or v < 0 for v in values):
        return False
    return abs(sum(values) - total) <= tolerance * total


# ---------------------------------------------------------------- checkpoint


def llama_config(hidden: int, layers: int, dtype: str) -> dict:
    """config.json for loader.make_checkpoint's Llama layout (head_dim 64, 4 query heads per KV head)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": (hidden * 8 // 3 + 255) // 256 * 256, "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 256, "head_dim": 64, "num_hidden_layers": layers, "vocab_size": 32000,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype],
    }


def build_checkpoint(dest: Path, size: int, dtype: str, shards: int) -> dict:
    from loader.make_checkpoint import CheckpointSpec, make_checkpoint

    hidden = 2048 if size >= 1_000_000_000 else 1024
    spec = CheckpointSpec(size, shards=shards, hidden=hidden, dtype=dtype, seed=0)
    stamp = dest / "recipe.json"
    recipe = {"size": size, "dtype": dtype, "shards": shards, "hidden": hidden}
    if not (stamp.exists() and json.loads(stamp.read_text()) == recipe):
        if dest.exists():
            shutil.rmtree(dest)
        make_checkpoint(dest, spec)
        stamp.write_text(json.dumps(recipe))
    names = set()
    for f in dest.glob("*.safetensors"):
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            names |= set(json.loads(fh.read(n)))
    layers = len({n.split(".")[2] for n in names if n.startswith("model.layers.")})
    (dest / "config.json").write_text(json.dumps(llama_config(hidden, layers, dtype), indent=1))
    (dest / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    weights = sorted(dest.glob("*.safetensors"))
    return {"hidden": hidden, "layers": layers, "dtype": dtype, "shards": len(weights),
            "bytes": sum(p.stat().st_size for p in weights)}


def model_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


REPORTED = (("vllm_loading_weights_s", r"Loading weights took ([0-9.]+) seconds"),
    ("warmscale_line", r"(warmscale loaded .*)"),
    ("init_engine_s", r"warmup model\) took ([0-9.]+) s"),
    ("runai_line", r"(Overall time to stream .*)"),
    ("compile_dynamo_s", r"Dynamo bytecode transform time: ([0-9.]+) s"),
    ("compile_graph", r"(Compiling a graph for compile range .*)"),
    ("compile_cache_hit", r"(Directly load the compiled graph.*)"),
    ("compile_aot_hit", r"(Directly load AOT compilation.*)"),
    ("compile_cache_load_failure", r"(Compiling model again due to a load failure.*)"),
    ("compile_aot_saved", r"(saved AOT compiled function .*)"),
    ("compile_warmup_s", r"Initial profiling/warmup run took ([0-9.]+) s"),
)


def reported_lines(lines: list[tuple[float, str]]) -> dict[str, str]:
    """What vLLM and the loaders say about themselves (their own times, compile-cache hits and misses)."""
    out: dict[str, str] = {}
    for _, text in lines:
        for key, pat in REPORTED:
            if key not in out and (m := re.search(pat, text)):
                out[key] = m.group(1)
    return out


# ---------------------------------------------------------------- one start


@dataclass
class Start:
    tier: str
    run: int
    total_s: float | None = None
    events: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float | None] = field(default_factory=dict)
    adds_up: bool = False
    error: str | None = None
    reported: dict[str, str] = field(default_factory=dict)
    log: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class LineReader(threading.Thread):
    """Reads the engine's combined output, time-stamping each line relative to t0, and tees it to a file."""

    def __init__(self, stream, t0: float, log_path: Path) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.stream, self.t0, self.log_path = stream, t0, log_path
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        with self.log_path.open("w") as log:
            for raw in iter(self.stream.readline, b""):
                t = time.perf_counter() - self.t0
                text = raw.decode(errors="replace").rstrip("\n")
                with self.lock:
                    self.lines.append((t, text))
                log.write(f"{t:9.3f} {text}\n")
                log.flush()

    def snapshot(self) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.lines)


def engine_argv(model: str, port: int, args: argparse.Namespace, extra: list[str], compile_on: bool) -> list[str]:
    argv = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
            "--port", str(port), "--served-model-name", "bench", "--skip-tokenizer-init", "--max-num-seqs", "2",
            "--max-model-len", "512", "--dtype", {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[args.dtype],
            "--seed", "0"]
    if args.device == "cpu":
        argv += ["--block-size", "32", "--num-gpu-blocks-override", "64"]
    if not compile_on:
        argv.append("-O0")
    return argv + extra


def engine_env(args: argparse.Namespace, cache_root: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLLM_DISABLE_LOG_LOGO": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_CACHE_ROOT": str(cache_root), "PYTHONPATH": str(ROOT)}
    if args.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    return {**env, **extra}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)


def one_start(tier: str, run: int, model: str, args: argparse.Namespace, *, extra_args: list[str] = (),
              extra_env: dict[str, str] | None = None, cache_root: Path, compile_on: bool = False,
              before_spawn=None, expect_failure: bool = False) -> Start:  # noqa: ANN001
    """One start: t0, ``before_spawn()`` (tier b's download), spawn, wait for /health, one completion."""
    result = Start(tier, run)
    port = free_port()
    log_path = LOGS[0] / f"{tier}-{run}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if before_spawn is not None:
        model = before_spawn()
    argv = engine_argv(model, port, args, list(extra_args), compile_on)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=engine_env(args, cache_root, extra_env or {}), start_new_session=True)
    events = {"spawn": time.perf_counter() - t0}
    reader = LineReader(proc.stdout, t0, log_path)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = t0 + args.start_timeout
        while True:
            if proc.poll() is not None:
                reader.join(timeout=5)
                text = "\n".join(t for _, t in reader.snapshot())
                found = SLEEP_ERROR.search(text) if expect_failure else None
                result.error = found.group(0) if found else f"engine exited with code {proc.returncode}; see {log_path}"
                result.events = {**events, **find_events(reader.snapshot()), "exit": round(time.perf_counter() - t0, 3)}
                return result
            if time.perf_counter() > deadline:
                result.error = f"no /health 200 within {args.start_timeout:.0f} s; see {log_path}"
                return result
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    events["health"] = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        body = {"model": "bench", "prompt": [1, 450, 4996, 17354, 1701], "max_tokens": 1, "temperature": 0}
        reply = httpx.post(f"{base}/v1/completions", json=body, timeout=300)
        reply.raise_for_status()
        events["token"] = time.perf_counter() - t0
        result.total_s = round(events["token"], 3)
        time.sleep(0.3)  # let the last lines arrive
        lines = reader.snapshot()
        events.update(find_events(lines))
        result.events = {k: round(v, 3) for k, v in events.items()}
        result.stages = stage_times(result.events)
        result.adds_up = stages_add_up(result.stages, result.total_s)
        result.reported = reported_lines(lines)
        return result
    except Exception as exc:  # noqa: BLE001 - one failed start is recorded, the ladder goes on
        return _failed(result, exc, log_path)
    finally:
        _close(result, proc, reader, log_path)


def _failed(result: Start, exc: Exception, log_path: Path) -> Start:
    result.error = f"{type(exc).__name__}: {exc}; see {log_path}"
    return result


def _close(result: Start, proc: subprocess.Popen, reader: LineReader, log_path: Path) -> None:
    """Stop the engine, drain its output and record where its log is."""
    stop(proc)
    reader.join(timeout=5)
    result.log = str(log_path.relative_to(ROOT))


def sleep_wake(run: int, model: str, args: argparse.Namespace, cache_root: Path) -> Start:
    """Tier g where the platform has sleep mode (CUDA): an engine started with --enable-sleep-mode is put
    to sleep (level 1: weights offloaded to host memory, KV cache dropped); t0, POST /wake_up, one
    completion. The engine's own start is not part of this tier's total."""
    result = Start("g", run)
    port = free_port()
    log_path = LOGS[0] / f"g-{run}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = engine_argv(model, port, args, ["--enable-sleep-mode"], compile_on=False)
    env = engine_env(args, cache_root, {"VLLM_SERVER_DEV_MODE": "1"})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    reader = LineReader(proc.stdout, time.perf_counter(), log_path)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.perf_counter() + args.start_timeout
        while True:
            if proc.poll() is not None or time.perf_counter() > deadline:
                reader.join(timeout=5)
                found = SLEEP_ERROR.search("\n".join(t for _, t in reader.snapshot()))
                result.error = found.group(0) if found else f"engine did not start; see {log_path}"
                return result
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        httpx.post(f"{base}/sleep", params={"level": "1"}, timeout=300).raise_for_status()
        t0 = time.perf_counter()
        httpx.post(f"{base}/wake_up", timeout=300).raise_for_status()
        woke = time.perf_counter() - t0
        body = {"model": "bench", "prompt": [1, 450, 4996, 17354, 1701], "max_tokens": 1, "temperature": 0}
        httpx.post(f"{base}/v1/completions", json=body, timeout=300).raise_for_status()
        result.total_s = round(time.perf_counter() - t0, 3)
        result.events = {"woke": round(woke, 3), "token": result.total_s}
        result.stages = {"wake_up": round(woke, 3), "first_token": round(result.total_s - woke, 3)}
        result.adds_up = True
        return result
    except Exception as exc:  # noqa: BLE001 - one failed start is recorded, the ladder goes on
        return _failed(result, exc, log_path)
    finally:
        _close(result, proc, reader, log_path)


# ---------------------------------------------------------------- the ladder


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[object]:
    from tests.ground.s3 import start_s3_server

    with start_s3_server(workdir, bucket="coldstart") as server:
        yield server


def upload(server, src: Path, prefix: str) -> None:  # noqa: ANN001
    client = server.client()
    for path in model_files(src):
        if path.name == "recipe.json":
            continue
        client.upload_file(str(path), server.bucket, f"{prefix}/{path.relative_to(src)}")


def boto3_download(server, prefix: str, dest: Path) -> Path:  # noqa: ANN001
    """What many users do: list the prefix, download every object with boto3's managed transfer."""
    from boto3.s3.transfer import TransferConfig

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    client = server.client()
    transfer = TransferConfig(max_concurrency=8)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    for key in keys:
        client.download_file(server.bucket, key, str(dest / key[len(prefix) + 1:]), Config=transfer)
    return dest


def warm_pool_stage(location: str, pool: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([PY, "-m", "loader.cli", "warm", location, "--cache-dir", str(pool), "--json"],
                         capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(starts: list[Start]) -> dict:
    ok = [s for s in starts if s.error is None and s.total_s is not None]
    out: dict[str, object] = {"runs": len(starts), "ok": len(ok), "errors": sorted({s.error for s in starts if s.error})}
    if not ok:
        return out
    totals = [s.total_s for s in ok]
    out["total_s"] = {"median": round(statistics.median(totals), 2), "min": round(min(totals), 2),
                      "max": round(max(totals), 2), "runs": totals}
    out["stages_s"] = {}
    for stage in dict.fromkeys(k for s in ok for k in s.stages):
        values = [s.stages.get(stage) for s in ok if s.stages.get(stage) is not None]
        if values:
            out["stages_s"][stage] = {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
                                      "max": round(max(values), 2)}
    data = [s.stages["fetch"] + s.stages["weights"] for s in ok
            if s.stages.get("fetch") is not None and s.stages.get("weights") is not None]
    if data:
        out["data_path_s"] = {"median": round(statistics.median(data), 2), "min": round(min(data), 2),
                              "max": round(max(data), 2)}
    out["stages_add_up"] = all(s.adds_up for s in ok)
    return out


TIER_TITLES = {
    "a_cold": "a. default loader, local dir, page cache cold",
    "a_warm": "a. default loader, local dir, page cache warm",
    "b": "b. boto3 download from S3, then default loader",
    "c": "c. runai_streamer from S3",
    "d": "d. warmscale from S3",
    "e": "e. warmscale from the node warm pool (page cache cold)",
    "e_warm": "e. warmscale from the node warm pool (page cache warm)",
    "f_cold": "f. torch.compile on, empty compile cache",
    "f_staged": "f. torch.compile on, compile cache staged",
    "g": "g. sleep mode (--enable-sleep-mode)",
}


def read_log(path: Path) -> list[tuple[float, str]]:
    """The time-stamped lines a LineReader wrote."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if m := re.match(r"^\s*(-?[0-9]+\.[0-9]+) (.*)$", raw):
            lines.append((float(m.group(1)), m.group(2)))
    return lines


def reparse(json_path: Path, supplements_in: list[str] = ()) -> int:
    """Recompute every start's log events and stages from its saved log (after a parser change), and
    fold in supplementary runs (``NAME=PATH.json:what they measure``); findings and supplements already
    in the file are kept."""
    saved = json.loads(json_path.read_text())
    starts = []
    for item in saved["starts"]:
        start = Start(**item)
        if start.error is None and start.total_s is not None and (ROOT / start.log).exists():
            kept = {k: v for k, v in start.events.items() if k in ("spawn", "health", "token")}
            start.events = {**kept, **{k: round(v, 3) for k, v in find_events(read_log(ROOT / start.log)).items()}}
            start.stages = stage_times(start.events)
            start.adds_up = stages_add_up(start.stages, start.total_s)
        if (ROOT / start.log).exists():
            start.reported = reported_lines(read_log(ROOT / start.log))
        starts.append(start)
    args = argparse.Namespace(device=saved["device"], runs=saved["runs_per_tier"], f_runs=saved["f_pairs"],
                              out=str(json_path.with_suffix("")), quick=False)
    result = write_results(starts, saved.get("notes", {}), saved["checkpoint"], args)
    supplements = dict(saved.get("supplements", {}))
    for spec in supplements_in:
        name, _, rest = spec.partition("=")
        path, _, what = rest.partition(":")
        sup = json.loads(Path(path).read_text())
        supplements[name] = {"what": what, **{k: sup[k] for k in ("runs_per_tier", "order", "tiers", "targets",
                                                                  "notes", "starts", "checkpoint")}}
    result.update({"supplements": supplements, "findings": saved.get("findings", [])})
    json_path.write_text(json.dumps(result, indent=1))
    json_path.with_suffix(".md").write_text(render_md(result))
    print(render_md(result))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2GB", help="checkpoint size (e.g. 2GB, 300MB)")
    p.add_argument("--dtype", choices=["BF16", "F32"], default="BF16")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="starts per tier (f: per pair)")
    p.add_argument("--f-runs", type=int, default=1, help="compile-cache pairs (tier f starts are the slowest)")
    p.add_argument("--tiers", default="a_cold,a_warm,b,c,d,e,f,g")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the GPU variant (vLLM's CUDA build; sleep mode is expected to work there)")
    p.add_argument("--start-timeout", type=float, default=900)
    p.add_argument("--quick", action="store_true", help="--runs 1 --size 300MB, results under bench/results/tmp")
    p.add_argument("--out", default=None, help="result file stem (default bench/results/coldstart_ladder)")
    p.add_argument("--compile-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the tier-f starts (e.g. VLLM_USE_AOT_COMPILE=0)")
    p.add_argument("--supplement", action="append", default=[], metavar="NAME=PATH.json:WHAT",
                   help="with --reparse: add a supplementary run's tiers as a section")
    p.add_argument("--reparse", type=Path, help="recompute the stages of a saved result file from its logs, and stop")
    args = p.parse_args()
    if args.reparse:
        return reparse(args.reparse, args.supplement)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the engine and the S3 server on the way out
    if args.quick:
        args.runs, args.size = 1, "300MB"
    from loader.cli import parse_size

    size = parse_size(args.size)
    LOGS[0] = WORK / "logs" / (Path(args.out).name if args.out else "quick" if args.quick else "coldstart_ladder")
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    WORK.mkdir(parents=True, exist_ok=True)
    drop_page_cache = load_bench_loader().drop_page_cache
    ckpt = WORK / f"ckpt-{args.size}-{args.dtype}"
    meta = build_checkpoint(ckpt, size, args.dtype, args.shards)
    print(f"checkpoint {ckpt}: {meta}", flush=True)
    weights = sorted(ckpt.glob("*.safetensors"))
    starts: list[Start] = []
    notes: dict[str, object] = {}
    cache_plain = WORK / "vllm-cache-O0"
    needs_s3 = any(t in tiers for t in ("b", "c", "d", "e", "e_warm"))
    with tempfile.TemporaryDirectory(dir=WORK, prefix="s3-") as s3dir, \
            (s3_server(Path(s3dir)) if needs_s3 else contextlib.nullcontext()) as server:
        prefix = "model"
        location = f"s3://{server.bucket}/{prefix}" if server else ""
        s3_env = runai_env = {}
        if server:
            upload(server, ckpt, prefix)
            s3_env = {**server.env(), "AWS_EC2_METADATA_DISABLED": "true"}
            runai_env = {**s3_env, "RUNAI_STREAMER_S3_ENDPOINT": server.endpoint_url,
                         "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0"}
        pool = WORK / "pool"
        if "e" in tiers or "e_warm" in tiers:
            shutil.rmtree(pool, ignore_errors=True)
            notes["warm_pool_stage"] = warm_pool_stage(location, pool, s3_env)
        pool_files = [p for p in model_files(pool / "entries") if p.suffix == ".safetensors"] if pool.exists() else []
        download_dir = WORK / "downloaded"

        def run_tier(tier: str, run: int) -> Start:
            if tier == "a_cold":
                drop_page_cache(weights)
                return one_start(tier, run, str(ckpt), args, cache_root=cache_plain)
            if tier == "a_warm":
                for w in weights:  # read once: every page in the page cache
                    with w.open("rb") as f:
                        while f.read(1 << 24):
                            pass
                return one_start(tier, run, str(ckpt), args, cache_root=cache_plain)
            if tier == "b":
                return one_start(tier, run, "", args, cache_root=cache_plain,
                                 before_spawn=lambda: str(boto3_download(server, prefix, download_dir)))
            if tier == "c":
                return one_start(tier, run, location, args, extra_args=["--load-format", "runai_streamer"],
                                 extra_env=runai_env, cache_root=cache_plain)
            if tier == "d":
                return one_start(tier, run, location, args, extra_args=["--load-format", "warmscale"],
                                 extra_env=s3_env, cache_root=cache_plain)
            if tier in ("e", "e_warm"):
                if tier == "e":
                    drop_page_cache(pool_files)
                else:  # a pool in memory (/dev/shm) or recently read
                    for w in pool_files:
                        with w.open("rb") as f:
                            while f.read(1 << 24):
                                pass
                return one_start(tier, run, location, args, extra_args=[
                    "--load-format", "warmscale", "--model-loader-extra-config", json.dumps({"cache_dir": str(pool)})],
                    extra_env=s3_env, cache_root=cache_plain)
            if tier == "g" and args.device != "cpu":
                return sleep_wake(run, str(ckpt), args, cache_plain)
            if tier == "g":
                return one_start(tier, run, str(ckpt), args, extra_args=["--enable-sleep-mode"],
                                 cache_root=cache_plain, expect_failure=args.device == "cpu")
            raise ValueError(tier)

        plain = [t for t in tiers if t not in ("f", "g")]
        for run in range(args.runs):
            for tier in plain:
                s = run_tier(tier, run)
                starts.append(s)
                print(json.dumps({k: v for k, v in s.to_json().items() if k != "events"}), flush=True)
                write_results(starts, notes, meta, args)
        if "g" in tiers:
            s = run_tier("g", 0)
            starts.append(s)
            print(json.dumps(s.to_json()), flush=True)
            write_results(starts, notes, meta, args)
        if "f" in tiers:
            for run in range(args.f_runs):
                cold_root = WORK / f"vllm-cache-cold-{run}"
                shutil.rmtree(cold_root, ignore_errors=True)
                for w in weights:
                    with w.open("rb") as f:
                        while f.read(1 << 24):
                            pass
                compile_env = dict(kv.split("=", 1) for kv in args.compile_env)
                notes["compile_env"] = compile_env
                s = one_start("f_cold", run, str(ckpt), args, cache_root=cold_root, compile_on=True,
                              extra_env=compile_env)
                starts.append(s)
                print(json.dumps(s.to_json()), flush=True)
                write_results(starts, notes, meta, args)
                staged_root = WORK / f"vllm-cache-staged-{run}"
                shutil.rmtree(staged_root, ignore_errors=True)
                shutil.copytree(cold_root, staged_root)  # what the warm pool would stage next to the weights
                notes[f"compile_cache_bytes_{run}"] = sum(p.stat().st_size for p in model_files(staged_root))
                s = one_start("f_staged", run, str(ckpt), args, cache_root=staged_root, compile_on=True,
                              extra_env=compile_env)
                starts.append(s)
                print(json.dumps(s.to_json()), flush=True)

    print(render_md(write_results(starts, notes, meta, args)))
    return 0


def write_results(starts: list[Start], notes: dict, meta: dict, args: argparse.Namespace) -> dict:
    """Summaries, targets and the files; called after every start, so a stopped run leaves its results."""
    by_tier: dict[str, dict] = {}
    for tier in TIER_TITLES:
        mine = [s for s in starts if s.tier == tier]
        if mine:
            by_tier[tier] = {"title": TIER_TITLES[tier], **summarize(mine)}
    med = lambda t: by_tier.get(t, {}).get("total_s", {}).get("median")  # noqa: E731
    targets = {}
    if med("d") and med("b"):
        targets["warmscale_s3_vs_boto3_then_load"] = {"ratio": round(med("b") / med("d"), 3), "met": med("d") < med("b")}
    if med("d") and med("c"):
        targets["warmscale_s3_vs_runai_streamer"] = {"ratio": round(med("c") / med("d"), 3), "met": med("d") < med("c")}
    s3_paths = [t for t in ("b", "c", "d") if med(t)]
    for pool_tier in ("e", "e_warm"):
        if med(pool_tier) and s3_paths:
            fastest = min(s3_paths, key=med)
            targets[f"warm_pool_{pool_tier}_vs_every_s3_path"] = {
                "fastest_s3_tier": fastest, "ratio": round(med(fastest) / med(pool_tier), 3),
                "met": all(med(pool_tier) < med(t) for t in s3_paths)}
    dmed = lambda t: by_tier.get(t, {}).get("data_path_s", {}).get("median")  # noqa: E731
    for name, (fast, slow) in {"data_path_warmscale_s3_vs_boto3_then_load": ("d", "b"),
                               "data_path_warmscale_s3_vs_runai_streamer": ("d", "c")}.items():
        if dmed(fast) and dmed(slow):
            targets[name] = {"ratio": round(dmed(slow) / dmed(fast), 3), "met": dmed(fast) < dmed(slow)}
    for pool_tier in ("e", "e_warm"):
        if dmed(pool_tier) and s3_paths and all(dmed(t) for t in s3_paths):
            fastest = min(s3_paths, key=dmed)
            targets[f"data_path_warm_pool_{pool_tier}_vs_every_s3_path"] = {
                "fastest_s3_tier": fastest, "ratio": round(dmed(fastest) / dmed(pool_tier), 3),
                "met": all(dmed(pool_tier) < dmed(t) for t in s3_paths)}
    targets["stages_add_up_within_10pct"] = all(s.adds_up for s in starts if s.error is None and s.total_s)
    result = {
        "bench": "coldstart_ladder", "device": args.device, "runs_per_tier": args.runs, "f_pairs": args.f_runs,
        "checkpoint": meta, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                        "python": platform.python_version()},
        "vllm": _version("vllm"), "torch": _version("torch"), "order": "tiers interleaved run by run",
        "tiers": by_tier, "targets": targets, "notes": notes, "starts": [s.to_json() for s in starts],
    }
    stem = Path(args.out) if args.out else (WORK / "quick" if args.quick else RESULTS / "coldstart_ladder")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(render_md(result))
    return result


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            return version(dist)
    return None


def _table(tiers: dict) -> list[str]:
    lines = [
        "| tier | total | " + " | ".join(STAGES) + " | weights: read / after | data path (fetch + weights) | runs ok "
        "| stages add up |",
        "|---|---|" + "---|" * len(STAGES) + "---|---|---|---|",
    ]
    for t in tiers.values():
        if "total_s" not in t:
            lines.append(f"| {t['title']} | unavailable: {'; '.join(t['errors'])} |" + " |" * (len(STAGES) + 2) +
                         f" {t['ok']}/{t['runs']} | |")
            continue
        tot, st = t["total_s"], t["stages_s"]
        cells = [f"{st[stage]['median']:.2f}" if stage in st else "-" for stage in STAGES]
        split = (f"{st['weights_read']['median']:.2f} / {st['weights_after_read']['median']:.2f}"
                 if "weights_read" in st else "-")
        data = t.get("data_path_s")
        data_cell = f"{data['median']:.2f} [{data['min']:.2f}-{data['max']:.2f}]" if data else "-"
        lines.append(f"| {t['title']} | **{tot['median']:.1f}** [{tot['min']:.1f}-{tot['max']:.1f}] | "
                     + " | ".join(cells) + f" | {split} | {data_cell} | {t['ok']}/{t['runs']} | "
                     + ("yes" if t["stages_add_up"] else "NO") + " |")
    return lines


def _compile_lines(starts: list[dict]) -> list[str]:
    out = []
    for x in starts:
        if x["tier"].startswith("f_"):
            said = {k: v for k, v in x.get("reported", {}).items() if k.startswith("compile") or k == "init_engine_s"}
            out.append(f"- {x['tier']} run {x['run']}: total {x['total_s']} s, warmup stage "
                       f"{x.get('stages', {}).get('warmup')} s; vLLM: {json.dumps(said)}")
    return out


def render_md(r: dict) -> str:
    m = r["checkpoint"]
    lines = [
        "# Cold-start ladder (bench/coldstart.py)", "",
        f"Real vLLM {r['vllm']} engine on {r['device']} ({r['machine']['cpus']} CPUs, shared with other work), "
        f"random Llama checkpoint: {m['bytes'] / 1e9:.2f} GB {m['dtype']}, hidden {m['hidden']}, {m['layers']} layers, "
        f"{m['shards']} shards. Medians over the runs counted in \"runs ok\" ({r['runs_per_tier']} planned per tier, "
        f"tier f: {r['f_pairs']} pair(s)), "
        f"{r['order']}; seconds from the scale decision (t0), min-max in brackets.", "",
        *_table(r["tiers"]),
    ]
    lines += ["", "## Targets (issue 14)", ""]
    for name, t in r["targets"].items():
        lines.append(f"- {name}: {json.dumps(t)}")
    lines += ["", "Stages: fetch = t0 to process spawn (boto3 download in b); process = spawn to API banner; "
              "engine = banner to \"Starting to load model\"; weights = that to the engine core's next line "
              "(model construction, loading, repacking; on a GPU runner \"Model loading took\"); warmup = that to "
              "\"init engine (profile, create kv cache, warmup model)\"; "
              "ready = that to /health 200; first_token = one 1-token completion. "
              "weights: read / after splits the weights stage at the loader's last line (its report or progress "
              "bar): reading and copying the tensors, then repacking them for the CPU kernels until the engine "
              "core resumes. "
              "Per-start events, vLLM's own reported times and logs are in coldstart_ladder.json."]
    if compile_lines := _compile_lines(r.get("starts", [])):
        lines += ["", "## Compile caches (tier f)", "", *compile_lines]
    for name, sup in r.get("supplements", {}).items():
        lines += ["", f"## Supplement: {name}", "", sup.get("what", ""), "",
                  f"Medians of {sup['runs_per_tier']} planned run(s) per tier, {sup['order']}.", "", *_table(sup["tiers"])]
        lines += [f"- {k}: {json.dumps(v)}" for k, v in sup["targets"].items()]
        if compile_lines := _compile_lines(sup.get("starts", [])):
            lines += ["", *compile_lines]
        if sup.get("notes"):
            lines += ["", "Notes: " + json.dumps(sup["notes"])]
    if r.get("findings"):
        lines += ["", "## Findings", "", *[f"- {f}" for f in r["findings"]]]
    if r.get("notes"):
        lines += ["", "Notes: " + json.dumps(r["notes"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
