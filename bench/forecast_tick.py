#!/usr/bin/env python
"""What forecasting adds to a controller tick at N models, with window closes on the tick (inline)
against off it (a single forecast thread, as the controller runs it). A measurement, not a test.

    .venv/bin/python bench/forecast_tick.py --models 1000
    .venv/bin/python bench/forecast_tick.py --models 50 --closes 2      # a short try

One model's history is built the way the controller builds it (`forecasting.live.make_prewarmer`,
the members this install has): ServeGen m-mid's request rate (collection gaps forward-filled), one 600 s window at a time, `--days`
days, refitting as it goes. The fleet is N copies of it, each with its refits shifted by its name
as the controller's are (`stagger_refits`), so every close refits a sixth of the fleet. Then, per
mode, `--closes` consecutive window closes: the tick that closes a window calls `with_forecast` for
every model, in one thread (the controller's model pool shares one GIL, so more threads add no CPU).
Measured per close: that tick's wall time; with the forecast thread, also the ticks that follow it
every 5 s, as the controller's do, while the thread works (they share the GIL), and how long until
every model's forecast has landed.
The baseline in the same run is the same fleet's tick when no window closes.
Also the resident memory of a model's forecaster, keeping 8 trained booster sets (the cache's
default) and the live path's 2. Writes bench/results/forecast_tick.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
TICK_S = 5.0


def observation(model: str, t: float, rate: float):
    from autoscaler.contract import Observation

    return Observation(model=model, time=t, ready_replicas=1, loading_replicas=0, waiting_requests=0.0,
                       running_requests=rate, kv_cache_usage=0.2, request_rate=rate,
                       prompt_token_rate=rate * 1000.0, generation_token_rate=rate * 200.0)


def demand(days: float) -> list[float]:
    from forecasting.traces import load_trace

    (series,) = load_trace("servegen-m-mid")
    rates, last = [], 0.0
    for r in series.values[: int(days * 144) + 16]:
        last = float(r) if r == r else last     # a collection gap: the demand stays where it was
        rates.append(last)
    return rates


def history_model(rates: list[float], windows: int, booster_sets: int | None = None):
    """One model's prewarmer with `windows` windows observed (refits inline, as they came);
    `booster_sets` replaces the live cache's size of trained booster sets."""
    from autoscaler.policy.capacity import H100_LLAMA3_8B
    from forecasting.boosting import BoosterCache
    from forecasting.live import WINDOW_S, make_prewarmer

    prewarmer = make_prewarmer(H100_LLAMA3_8B, "p90", 0, 100, 0.8)
    if booster_sets is not None:
        prewarmer.forecaster._boosters = BoosterCache(capacity=booster_sets)
    for w in range(windows + 1):
        prewarmer.observe("m", w * WINDOW_S + 1.0, rates[w], rates[w] * 1000.0, rates[w] * 200.0)
    return prewarmer


def fleet(template, n: int, run_refresh) -> list[tuple[str, object]]:
    """N copies of `template`'s model, each shifted in its refit cycle by its name."""
    out = []
    for i in range(n):
        name = f"model-{i:04d}"
        p = copy.deepcopy(template)
        state = p._models.pop("m")
        state.windows_since_fit = -(zlib.crc32(name.encode()) % p.refit_every_windows)
        p._models[name] = state
        p._run_refresh = run_refresh
        out.append((name, p))
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_per_model(rates: list[float], windows: int, booster_sets: int | None, n: int) -> float:
    """MB of resident memory per model forecaster (in a process of its own, so that no freed memory is reused)."""
    template = history_model(rates, windows, booster_sets)
    before = _rss_mb()
    models = fleet(template, n, None)
    return (_rss_mb() - before) / len(models)


def tick(models, t: float, rate: float) -> float:
    from forecasting.live import with_forecast

    started = time.perf_counter()
    for name, prewarmer in models:
        with_forecast(prewarmer, observation(name, t, rate))
    return time.perf_counter() - started


def run_mode(template, n: int, first_window: int, closes: int, rates: list[float], background: bool) -> dict:
    from forecasting.live import WINDOW_S

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast") if background else None
    models = fleet(template, n, pool.submit if pool else None)
    rows = []
    try:
        for k in range(closes):
            window = first_window + 1 + k
            rate = rates[window]
            t0 = window * WINDOW_S + 1.0
            close_started = time.perf_counter()
            close_s = tick(models, t0, rate)
            row = {"window": window, "close_tick_s": close_s, "following_ticks_s": []}
            if pool:
                done = pool.submit(time.perf_counter)   # runs after every refresh queued before it
                t, next_tick = t0, close_started + TICK_S
                while not done.done():
                    time.sleep(max(0.0, next_tick - time.perf_counter()))
                    t, next_tick = t + TICK_S, next_tick + TICK_S
                    row["following_ticks_s"].append(tick(models, t, rate))
                row["landed_after_s"] = done.result() - close_started
            row["quiet_tick_s"] = tick(models, t0 + WINDOW_S / 2, rate)
            rows.append(row)
            print(f"  {'forecast thread' if pool else 'inline'} close {k + 1}/{closes}: tick {close_s:.2f} s"
                  + (f", {len(row['following_ticks_s'])} ticks until all landed" if pool else ""), flush=True)
    finally:
        if pool:
            pool.shutdown(wait=True)
    return {"background": background, "closes": rows}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(mode: dict) -> dict:
    rows = mode["closes"]
    out = {"close_tick_s": _stats([r["close_tick_s"] for r in rows]),
           "quiet_tick_s": _stats([r["quiet_tick_s"] for r in rows])}
    following = [s for r in rows for s in r["following_ticks_s"]]
    if following:
        out["following_tick_s"] = _stats(following)
    if mode["background"]:
        out["landed_after_s"] = _stats([r["landed_after_s"] for r in rows])
    return out


def render(doc: dict) -> str:
    a, inline, bg = doc["args"], doc["inline"], doc["background"]
    mem, live = doc["memory_mb_per_model"], doc["live_booster_sets"]

    def cell(s: dict | None) -> str:
        return "-" if s is None else f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}, n={s['n']})"

    ratio = inline["close_tick_s"]["median"] / bg["close_tick_s"]["median"]
    return "\n".join([
        f"# Forecasting on the controller's tick: {a['models']} models", "",
        f"Command: `{doc['command']}`. {doc['machine']}; members {', '.join(doc['members'])}; history "
        f"{doc['history_windows']} windows of 600 s (ServeGen m-mid); {a['closes']} consecutive window closes per mode, "
        f"medians with ranges over them. The history took {doc['build_s']:.0f} s to build.", "",
        "The copies share one history, so a refit reuses the gradient-boosting member's cached boosters, as refits "
        "do between the 36-window blocks in which its training history moves; a close at a block's move also retrains "
        "them (not measured here).", "",
        "| where a close's fit and forecast run | the closing tick | ticks while the thread works | "
        "all forecasts landed after | a tick with no close (baseline) |",
        "|---|---|---|---|---|",
        f"| in the tick (before) | {cell(inline['close_tick_s'])} | - | - | {cell(inline['quiet_tick_s'])} |",
        f"| forecast thread (now) | {cell(bg['close_tick_s'])} | {cell(bg.get('following_tick_s'))} | "
        f"{cell(bg['landed_after_s'])} | {cell(bg['quiet_tick_s'])} |", "",
        f"The closing tick is **{ratio:.1f}x** shorter with the forecast thread (median over closes, same run).", "",
        f"Resident memory per model's forecaster ({a['memory_models']} copies, each size in a process of its own): "
        f"{mem['8']:.2f} MB keeping 8 trained booster sets (before), {mem[str(live)]:.2f} MB keeping {live} (now): "
        f"{mem['8'] / mem[str(live)]:.1f}x less, {mem[str(live)] * 1000 / 1024:.1f} GB for 1,000 models.", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--closes", type=int, default=3, help="window closes per mode (each refits about a sixth of the fleet)")
    ap.add_argument("--days", type=float, default=7.0, help="days of history before the measured closes")
    ap.add_argument("--memory-models", type=int, default=200, help="copies whose resident memory is measured")
    ap.add_argument("--out", default="forecast_tick")
    args = ap.parse_args(argv)
    rates = demand(args.days + 1)
    windows = int(args.days * 144)
    started = time.perf_counter()
    template = history_model(rates, windows)
    build_s = time.perf_counter() - started
    print(f"history of {windows} windows built in {build_s:.0f} s", flush=True)
    from forecasting.live import LIVE_BOOSTER_SETS

    memory = {}
    for sets in (8, LIVE_BOOSTER_SETS):     # 8: the cache's size before the live path had its own
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as proc:
            memory[sets] = proc.submit(memory_per_model, rates, windows, sets, args.memory_models).result()
        print(f"booster sets kept {sets}: {memory[sets]:.2f} MB per model", flush=True)
    inline = run_mode(template, args.models, windows, args.closes, rates, background=False)
    background = run_mode(template, args.models, windows, args.closes, rates, background=True)
    doc = {"args": vars(args), "command": "bench/forecast_tick.py " + " ".join(argv or sys.argv[1:]),
           "machine": f"{platform.machine()}, shared 2-core", "members": list(template.forecaster.config.members),
           "history_windows": windows, "build_s": build_s,
           "memory_mb_per_model": {str(k): v for k, v in memory.items()}, "live_booster_sets": LIVE_BOOSTER_SETS,
           "inline": summarise(inline), "background": summarise(background), "runs": [inline, background]}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=1))
    (RESULTS / f"{args.out}.md").write_text(render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
