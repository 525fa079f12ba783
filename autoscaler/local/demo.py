"""`warmscale demo`: the tiny model on real CPU vLLM engines, scaled by warmscale while a slice of an Azure
trace is replayed against the router; then a report beside the simulator's run of the same requests.

The replay: `--slice` of `--trace`, its rate scaled so that the busiest minute needs `--peak-engines`
tiny CPU engines (the tiny-llama-cpu profile's sustainable rate), then time-compressed `--compress`
times (1 s of the demo plays that many seconds of the trace). The slice is played in two halves with
silence between them that lasts until warmscale has taken the fleet to zero (at most `--quiet-max-s`),
so the second half shows a start from zero again; `--no-to-zero` plays it in one go. Prompts and
outputs are clipped to the engine's 2,048-token context. All of this is printed before it starts.

Output: a live view (plain log lines when stdout is not a terminal), then in `--results`
(default ./warmscale-demo): report.md, demo.png and demo.json (the structured summary, the timeline,
the decisions, the simulator's result), with the wall time and the peak memory (RSS) of the whole
process tree, engines included.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["register", "run", "run_demo", "build_replay", "Replay", "DEFAULT_RESULTS"]

MODEL = "tiny"
PROFILE = "tiny-llama-cpu"
CONTEXT = 2048
MAX_OUTPUT = 128
DEFAULT_RESULTS = Path("warmscale-demo")
# The test ground's engine arguments (tests/ground/vllm.py) with float32: the CPU build's bf16
# kernels kill the engine on its first request on x86 hosts that advertise AVX512-BF16/AMX (the
# engine core dies, every request then gets HTTP 500); float32 runs wherever the CPU build does.
ENGINE_ARGS = ["--skip-tokenizer-init", "--max-num-seqs", "4", "--block-size", "32", "--num-gpu-blocks-override",
               "256", "--max-model-len", str(CONTEXT), "--dtype", "float32", "--seed", "0", "-O0"]
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# The policy at demo speed: windows of seconds instead of minutes, so that a few minutes show
# scale-up, scale-down and a return to zero. The live run and the simulator both use these.
POLICY = {"interval_s": 2, "stable_window_s": 30, "panic_window_s": 6, "rate_window_s": 20, "idle_grace_s": 15,
          "scale_down_period_s": 10, "burst_hold_s": 0, "trend_window_s": 20}
HOLD = {"max_held": 2000, "max_wait_s": 300, "retry_after_s": 10}
QUIET_MIN_S = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    from autoscaler.local.cli import EXIT_CODES

    p = subparsers.add_parser("demo", help="live demo: the tiny model on CPU vLLM engines, scaled by warmscale "
                              "under a replayed Azure trace", epilog=EXIT_CODES, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", default="azure-conv", help="trace name or CSV path (default azure-conv)")
    p.add_argument("--slice", default="20m:50m", help="part of the trace on its own clock, START:END (default 20m:50m)")
    p.add_argument("--compress", type=float, default=8.0, help="time compression: 1 s of demo plays this many "
                   "seconds of the trace (default 8)")
    p.add_argument("--peak-engines", type=float, default=1.5, help="engines the busiest minute needs (default 1.5)")
    p.add_argument("--max-engines", type=int, default=2, help="at most this many engines (default 2)")
    p.add_argument("--to-zero", action=argparse.BooleanOptionalAction, default=True,
                   help="silence between the slice's halves until the fleet is at zero (default on)")
    p.add_argument("--quiet-max-s", type=float, default=120.0, help="longest silence between the halves, s")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help=f"report folder (default ./{DEFAULT_RESULTS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="plain log lines (default when stdout is not a terminal)")
    p.set_defaults(handler=run)


# ---------------------------------------------------------------------------- the replayed requests
@dataclass
class Replay:
    """The requests on the demo's clock: `at` seconds after the replay starts for the first half, after
    the silence ends for the second (`second` marks them)."""

    at: np.ndarray
    second: np.ndarray       # bool: in the second half
    prompt: np.ndarray
    output: np.ndarray
    trace: str
    start_s: float           # the slice, on the trace's clock
    end_s: float
    compress: float
    rate_factor: float       # applied to the trace's rate before compression
    peak_engines: float
    to_zero: bool

    @property
    def played_s(self) -> float:
        return (self.end_s - self.start_s) / self.compress

    def describe(self) -> str:
        from autoscaler.sim.traces import human_span

        gap = ("in two halves with silence between them until warmscale has taken the fleet to zero"
               if self.to_zero else "in one go")
        return (f"{self.trace} {human_span(self.start_s)}-{human_span(self.end_s)} (on the trace's clock), rate x"
                f"{self.rate_factor:.3g} so that its busiest minute needs {self.peak_engines:g} tiny CPU engine(s), "
                f"time compressed {self.compress:g}x (1 s here = {self.compress:g} s of trace): {len(self.at):,} "
                f"requests in {self.played_s:.0f} s, {gap}; prompts clipped to {CONTEXT} tokens minus the output, "
                f"outputs to {MAX_OUTPUT}")

    def to_dict(self) -> dict:
        return {"trace": self.trace, "start_s": self.start_s, "end_s": self.end_s, "compress": self.compress,
                "rate_factor": self.rate_factor, "peak_engines": self.peak_engines, "requests": int(len(self.at)),
                "played_s": self.played_s, "to_zero": self.to_zero, "description": self.describe()}


def _clipped(prompt: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    output = np.clip(output, 1, MAX_OUTPUT)
    return np.clip(prompt, 1, CONTEXT - output), output


def build_replay(trace: str, slice_text: str, compress: float, peak_engines: float, profile, seed: int = 0,
                 to_zero: bool = True) -> Replay:
    """The slice, scaled so that its busiest (compressed) minute needs `peak_engines` engines of
    `profile` at its sustainable rate, compressed `compress` times. Raises ValueError on bad input."""
    from autoscaler.sim.runner import parse_slice
    from autoscaler.sim.traces import load_workload

    if not compress > 0:
        raise ValueError(f"--compress: expected a number > 0, got {compress}")
    if not peak_engines > 0:
        raise ValueError(f"--peak-engines: expected a number > 0, got {peak_engines}")
    s0, s1 = parse_slice(slice_text)
    raw = load_workload(trace, factor=1.0, start_s=s0, end_s=s1, seed=seed)
    if raw.kind != "requests":
        raise ValueError(f"trace {trace}: the demo replays request traces (one row per request), not rate traces")
    prompt, output = _clipped(raw.prompt, raw.output)
    per_engine = profile.sustainable_rate(float(prompt.mean()), float(output.mean()))
    busiest = np.bincount(((raw.arrival - raw.start_s) // 60).astype(np.int64)).max() / 60.0
    factor = peak_engines * per_engine / (busiest * compress)
    w = load_workload(trace, factor=factor, start_s=s0, end_s=s1, seed=seed)
    prompt, output = _clipped(w.prompt, w.output)
    t = (w.arrival - w.start_s) / compress
    half = (w.end_s - w.start_s) / compress / 2
    second = (t >= half) if to_zero else np.zeros(t.size, dtype=bool)
    at = np.where(second, t - half, t)
    return Replay(at, second, prompt.astype(np.int64), output.astype(np.int64), w.name, w.start_s, w.end_s,
                  compress, factor, peak_engines, to_zero)


# ---------------------------------------------------------------------------- load generator
@dataclass
class Sent:
    scheduled_s: float           # on the demo's clock (first half: since the start; second: since the silence ended)
    sent_s: float = 0.0          # when it was sent, seconds since the replay started
    status: int = 0
    ttft_s: float | None = None
    latency_s: float | None = None
    tokens: int = 0
    wanted: int = 0
    error: str = ""

    @property
    def served(self) -> bool:
        return self.status == 200 and not self.error and self.tokens == self.wanted


@dataclass
class LoadState:
    sent: list[Sent] = field(default_factory=list)
    answered: int = 0
    quiet_from_s: float | None = None
    quiet_s: float | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    failure: str = ""

    def summary(self) -> str:
        codes: dict[int, int] = {}
        for s in self.sent:
            if s.status:
                codes[s.status] = codes.get(s.status, 0) + 1
        return (f"sent {len(self.sent)}, finished {self.answered} "
                + " ".join(f"[HTTP {c}: {n}]" for c, n in sorted(codes.items())))


async def _one(session, url: str, prompt: list[int], max_tokens: int, rec: Sent) -> None:
    import aiohttp

    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            "temperature": 0.0, "stream_options": {"include_usage": True}}
    start = time.monotonic()
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            rec.status = resp.status
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices") and rec.ttft_s is None:
                    rec.ttft_s = time.monotonic() - start
                if chunk.get("usage"):
                    rec.tokens = chunk["usage"]["completion_tokens"]
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.latency_s = time.monotonic() - start


async def _replay(url: str, replay: Replay, state: LoadState, fleet_size, quiet_max_s: float, seed: int) -> None:
    """Send the first half on its schedule, wait for the silence to end, send the second half."""
    import aiohttp

    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    tasks: list[asyncio.Task] = []

    async def send(at: float, base: float, p: int, o: int, session) -> None:
        delay = base + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = Sent(float(at), time.monotonic() - t0, wanted=o)
        state.sent.append(rec)
        prompt = rng.integers(3, 2048, size=p).tolist()

        async def go():
            await _one(session, url, prompt, o, rec)
            state.answered += 1
        tasks.append(asyncio.create_task(go()))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=900)) as session:
        first = ~replay.second
        for at, p, o in zip(replay.at[first], replay.prompt[first], replay.output[first]):
            await send(at, t0, int(p), int(o), session)
        if replay.second.any():
            half = replay.played_s / 2
            await asyncio.sleep(max(0.0, t0 + half - time.monotonic()))
            state.quiet_from_s = time.monotonic() - t0
            quiet0 = time.monotonic()
            while True:
                waited = time.monotonic() - quiet0
                if (waited >= QUIET_MIN_S and fleet_size() == 0) or waited >= quiet_max_s:
                    break
                await asyncio.sleep(0.5)
            state.quiet_s = time.monotonic() - quiet0
            base = time.monotonic()
            for at, p, o in zip(replay.at[replay.second], replay.prompt[replay.second], replay.output[replay.second]):
                await send(at, base, int(p), int(o), session)
        await asyncio.gather(*tasks)


def _run_replay(url: str, replay: Replay, state: LoadState, fleet_size, quiet_max_s: float, seed: int) -> None:
    try:
        asyncio.run(_replay(url, replay, state, fleet_size, quiet_max_s, seed))
    except Exception as exc:  # noqa: BLE001 - reported as the demo's one error line
        state.failure = f"load generator: {type(exc).__name__}: {exc}"
    finally:
        state.finished.set()


# ---------------------------------------------------------------------------- memory of the process tree
class PeakRss:
    """The largest summed RSS seen of this process and all its descendants (engines included)."""

    def __init__(self):
        import psutil

        self._me = psutil.Process()
        self.peak = 0

    def sample(self) -> int:
        import psutil

        total = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total


# ---------------------------------------------------------------------------- the run
def demo_config(model_dir: Path, state_dir: Path, max_engines: int):
    from autoscaler.local.config import LocalConfig

    return LocalConfig.model_validate({
        "state_dir": str(state_dir), "scrape_interval_s": 1.0, "router": {"port": 0, "hold": HOLD},
        "models": [{"name": MODEL, "model": str(model_dir), "args": ENGINE_ARGS, "env": ENGINE_ENV,
                    "min_replicas": 0, "max_replicas": max_engines, "capacity": {"profile": PROFILE},
                    "policy": {"name": "warmscale", "settings": POLICY}, "drain_timeout_s": 60,
                    "stop_grace_s": 10}]})


@dataclass
class DemoRun:
    """What the live run leaves for the report."""

    replay: Replay
    load: LoadState
    timeline: dict
    changes: list[dict]
    restarts: int
    engine_start_s: list[float] = field(default_factory=list)   # process start -> Ready, each engine
    wall_s: float = 0.0
    peak_rss: int = 0


class DemoError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def run_demo(replay: Replay, max_engines: int, quiet_max_s: float, seed: int = 0, plain: bool | None = None,
             say=print) -> DemoRun:
    """The live part: runner, router, engines, load generator, view. Raises DemoError."""
    from autoscaler.local.cli import EXIT_ENGINE, open_runner
    from autoscaler.local.runner import LocalRunner
    from autoscaler.local.tiny_model import cached_tiny_llama
    from autoscaler.local.view import make_view

    wall0 = time.monotonic()
    say("making the tiny random Llama (cached after the first run) ...")
    model_dir = cached_tiny_llama()
    peak = PeakRss()
    load = LoadState()
    changes: list[dict] = []
    timeline: dict[str, list] = {k: [] for k in ("t", "ready", "starting", "draining", "held", "waiting", "running",
                                                 "kv", "arrival_rate", "desired")}
    clock0 = {"t": time.time()}
    view_box: dict = {}

    def on_tick(views):
        peak.sample()
        v = views[0]
        t = v.time - clock0["t"]
        for key, value in (("t", t), ("ready", v.engines.get("ready", 0)), ("starting", v.engines.get("starting", 0)),
                           ("draining", v.engines.get("draining", 0) + v.engines.get("stopping", 0)),
                           ("held", v.held), ("waiting", v.waiting), ("running", v.running), ("kv", v.kv_cache_usage),
                           ("arrival_rate", v.arrival_rate), ("desired", v.desired)):
            timeline[key].append(value)
        d = v.decision
        if d is not None and d.desired != d.current and (not changes or changes[-1]["time"] != d.time):
            changes.append({"time": d.time, "t": d.time - clock0["t"], "current": d.current, "desired": d.desired,
                            "reason": str(d.reason), "signal": str(d.signal), "detail": d.detail})
        view_box["view"].update(views, extra=f"{_phase(replay, load, t)} | {load.summary()} | memory "
                                             f"{peak.peak / 2**30:.2f} GiB peak | {time.monotonic() - wall0:.0f} s")

    with tempfile.TemporaryDirectory(prefix="warmscale-demo-") as state_dir:
        runner = LocalRunner(demo_config(model_dir, Path(state_dir), max_engines), source="demo", on_tick=on_tick)
        code = open_runner(runner)
        if code is not None:
            raise DemoError("", code)   # open_runner has printed the error line
        sup = runner.models[MODEL].supervisor
        view_box["view"] = make_view(f"warmscale demo: router {runner.router_url}; replay: {replay.describe()}",
                                     plain=plain)
        try:
            runner.start()
            clock0["t"] = time.time()
            loader = threading.Thread(target=_run_replay, name="replay", daemon=True,
                                      args=(runner.router_url, replay, load, lambda: sum(sup.counts().values()),
                                            quiet_max_s, seed))
            loader.start()
            while not load.finished.wait(1.0) and not runner.failed:
                pass
        finally:
            view_box["view"].close()
            starts = [e["start_s"] for e in runner.state.events(MODEL, "engine_ready")]
            runner.stop(drain_s=30)
        restarts = sup.restarts
    if runner.failed:
        raise DemoError(runner.failed, EXIT_ENGINE)
    if load.failure:
        raise DemoError(load.failure, 1)
    run = DemoRun(replay, load, timeline, changes, restarts, starts, peak_rss=peak.peak)
    run.wall_s = time.monotonic() - wall0
    return run


def _phase(replay: Replay, load: LoadState, t: float) -> str:
    if load.quiet_from_s is None:
        return f"replay: first half {min(t, replay.played_s / 2):.0f}/{replay.played_s / 2:.0f} s" if replay.to_zero \
            else f"replay {min(t, replay.played_s):.0f}/{replay.played_s:.0f} s"
    if load.quiet_s is None:
        return f"silence for {t - load.quiet_from_s:.0f} s: waiting for the fleet to reach zero"
    return f"replay: second half (after {load.quiet_s:.0f} s of silence)"


def run(args: argparse.Namespace) -> int:
    from autoscaler.local.cli import EXIT_CONFIG, error
    from autoscaler.local.demo_report import write_report
    from autoscaler.sim.profile import load_profile

    wall0 = time.monotonic()
    if args.max_engines < 1:
        return error(f"--max-engines: expected at least 1, got {args.max_engines}", EXIT_CONFIG)
    try:
        profile = load_profile(PROFILE)
        replay = build_replay(args.trace, args.slice, args.compress, args.peak_engines, profile, args.seed,
                              args.to_zero)
    except (ValueError, FileNotFoundError) as exc:
        return error(f"demo: {exc}", EXIT_CONFIG)
    print(f"warmscale demo: replaying {replay.describe()}", flush=True)
    try:
        live = run_demo(replay, args.max_engines, args.quiet_max_s, args.seed, plain=True if args.plain else None)
    except DemoError as exc:
        return error(str(exc), exc.code) if str(exc) else exc.code
    live.wall_s = time.monotonic() - wall0
    try:
        summary = write_report(args.results, live, profile, args.max_engines)
    except OSError as exc:
        return error(f"demo report: cannot write {args.results}: {exc.strerror or exc}", 1)
    out = args.results
    lv = summary["live"]
    print(f"served {lv['served']}/{lv['requests']} requests, peak {lv['peak_engines']} engines, "
          + ("reached zero and came back; " if lv["returned_from_zero"] else
             "did not reach zero and come back; " if replay.to_zero else "")
          + f"wall {lv['wall_s']:.0f} s, peak memory {lv['peak_rss_gib']:.2f} GiB", flush=True)
    print(f"report: {out / 'report.md'} (plot {out / 'demo.png'}, data {out / 'demo.json'})", flush=True)
    return 0
