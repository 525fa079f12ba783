"""Router overhead: added latency and throughput through one router process, against direct calls.

    .venv/bin/python bench/router.py [--runs 5] [--requests 2000] [--engine | --no-engine]

Three processes on loopback: an upstream, the router (autoscaler.router: starlette + uvicorn, aiohttp upstream) in
front of it, and this client (aiohttp). Each run measures, in the same run:
- latency: sequential non-streaming requests, alternating direct to the upstream and through the router;
  added latency = p50 via router - p50 direct.
- throughput: `--concurrency` clients for `--seconds`, direct and through the router.
The upstream is `autoscaler.router.echo` (answers at once: the router's own cost is what
shows) and, with --engine, the real vLLM CPU engine serving the tiny model (float32, 1 generated token),
for latency only: a CPU engine cannot answer 500 requests/s itself, so throughput against it
would measure the engine.
Results: medians over runs with min-max, written to bench/results/router.{json,md}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
MODEL = "m"


# ---------------------------------------------------------------------------- servers (child processes)
def _serve(kind: str, port_queue, upstream_url: str | None, model: str) -> None:
    import uvicorn

    from autoscaler.router.app import Router, build_app
    from autoscaler.router.echo import echo_app
    from autoscaler.router.endpoints import StaticEndpoints
    from autoscaler.router.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port_queue.put(sock.getsockname()[1])
    app = echo_app(model) if kind == "echo" else build_app(Router(StaticEndpoints({model: [upstream_url]})))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def _start(kind: str, upstream_url: str | None = None, model: str = MODEL):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(kind, q, upstream_url, model), daemon=True)
    proc.start()
    port = q.get(timeout=60)
    url = f"http://127.0.0.1:{port}"
    import httpx
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + ("/health"), timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{kind} server did not start")


# ---------------------------------------------------------------------------- client
def _body(model: str, prompt) -> bytes:
    return json.dumps({"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}).encode()


async def _latencies(direct_url: str, router_url: str, model: str, prompt, n: int) -> tuple[list[float], list[float]]:
    """`n` sequential requests each way, alternating direct and via the router so that both see the
    same moments of a shared machine's load."""
    import aiohttp

    body = _body(model, prompt)
    out: dict[str, list[float]] = {direct_url: [], router_url: []}

    async def one(s, url: str) -> float:
        t = time.perf_counter()
        async with s.post(url + "/v1/completions", data=body) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{url}: HTTP {r.status}")
        return time.perf_counter() - t

    async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as s:
        for _ in range(min(20, n)):   # warm the connections
            await one(s, direct_url)
            await one(s, router_url)
        for i in range(n):
            for url in ((direct_url, router_url) if i % 2 == 0 else (router_url, direct_url)):
                out[url].append(await one(s, url))
    return out[direct_url], out[router_url]


async def _throughput(url: str, model: str, prompt, concurrency: int, seconds: float) -> dict:
    import aiohttp

    body = _body(model, prompt)
    done = errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(s):
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            async with s.post(url + "/v1/completions", data=body) as r:
                await r.read()
                if r.status == 200:
                    done += 1
                else:
                    errors += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers={"content-type": "application/json"}) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"rps": done / elapsed, "requests": done, "errors": errors}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


# ---------------------------------------------------------------------------- one upstream
def bench_upstream(name: str, upstream_url: str, model: str, prompt, runs: int, n: int, concurrency: int,
                   seconds: float, throughput: bool) -> dict:
    router_proc, router_url = _start("router", upstream_url, model)
    try:
        added, direct_p50, router_p50, direct_p99, router_p99 = [], [], [], [], []
        rps_direct, rps_router = [], []
        for run in range(runs):
            d, r = asyncio.run(_latencies(upstream_url, router_url, model, prompt, n))
            direct_p50.append(_pct(d, 0.5) * 1e3)
            router_p50.append(_pct(r, 0.5) * 1e3)
            direct_p99.append(_pct(d, 0.99) * 1e3)
            router_p99.append(_pct(r, 0.99) * 1e3)
            added.append(router_p50[-1] - direct_p50[-1])
            line = f"  {name} run {run + 1}: p50 direct {direct_p50[-1]:.2f} ms, via router {router_p50[-1]:.2f} ms"
            if throughput:
                rps_direct.append(asyncio.run(_throughput(upstream_url, model, prompt, concurrency, seconds))["rps"])
                rps_router.append(asyncio.run(_throughput(router_url, model, prompt, concurrency, seconds))["rps"])
                line += f"; {rps_direct[-1]:.0f} req/s direct, {rps_router[-1]:.0f} via router"
            print(line, flush=True)
        out = {"added_p50_ms": _summary(added), "direct_p50_ms": _summary(direct_p50),
               "router_p50_ms": _summary(router_p50), "direct_p99_ms": _summary(direct_p99),
               "router_p99_ms": _summary(router_p99), "requests_per_run": n}
        if throughput:
            out["direct_rps"] = _summary(rps_direct)
            out["router_rps"] = _summary(rps_router)
            out["router_over_direct_rps"] = _summary([r / d for r, d in zip(rps_router, rps_direct)])
            out["concurrency"], out["seconds"] = concurrency, seconds
        return out
    finally:
        router_proc.terminate()
        router_proc.join(10)


def _engine(workdir: Path):
    """The real vLLM CPU engine serving the tiny model, or None when vLLM is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None
    from autoscaler.local.demo import ENGINE_ARGS, ENGINE_ENV
    from autoscaler.local.tiny_model import cached_tiny_llama
    from tests.ground.vllm import start_vllm

    return start_vllm(cached_tiny_llama(), workdir, extra_args=ENGINE_ARGS, env=ENGINE_ENV, use_default_args=False)


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per run (latency)")
    ap.add_argument("--engine-requests", type=int, default=200, help="sequential requests per run on the engine")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one throughput measurement")
    ap.add_argument("--engine", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure latency in front of the real vLLM CPU engine (default: on when installed)")
    ap.add_argument("--out", type=Path, default=RESULTS / "router")
    args = ap.parse_args(argv)

    load_before = _load_average()
    t0 = time.time()
    results: dict = {"how": {
        "command": "bench/router.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_before": load_before,
        "client": "aiohttp, same machine, loopback", "router": "autoscaler.router (starlette + uvicorn, aiohttp to the upstream), "
        "one process", "upstream_echo": "autoscaler.router.echo in its own process (answers at once)"}}
    echo_proc, echo_url = _start("echo")
    try:
        print(f"echo upstream ({args.runs} runs):", flush=True)
        results["echo"] = bench_upstream("echo", echo_url, MODEL, "hi", args.runs, args.requests, args.concurrency,
                                         args.seconds, throughput=True)
    finally:
        echo_proc.terminate()
        echo_proc.join(10)
    if args.engine:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cm = _engine(Path(tmp))
            if cm is None:
                results["engine"] = {"skipped": "vLLM is not installed"}
            else:
                with cm as engine:
                    print(f"vLLM CPU engine, tiny model, 1 token ({args.runs} runs):", flush=True)
                    results["engine"] = bench_upstream("engine", engine.base_url, engine.model, [5, 6, 7, 8],
                                                       args.runs, args.engine_requests, args.concurrency,
                                                       args.seconds, throughput=False)
    results["how"]["load_average_after"] = _load_average()
    results["how"]["wall_s"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(results))
    print(render(results))
    return 0


def _f(s: dict, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def render(results: dict) -> str:
    how = results["how"]
    e = results["echo"]
    lines = [
        "# Router overhead (bench/router.py)", "",
        f"`{how['command']}` on {how['machine']}; load average before {how['load_average_before']}, after "
        f"{how.get('load_average_after', '-')} (a 2-core machine shared with other jobs). Medians over runs, "
        "min-max in brackets; in each run the latency requests alternate direct and via the router, and the "
        "throughput runs go back to back.", "",
        f"Client: {how['client']}. Router: {how['router']}. Upstream: {how['upstream_echo']}.", "",
        "| upstream | p50 direct, ms | p50 via router, ms | added p50, ms | p99 direct, ms | p99 via router, ms |",
        "|---|---|---|---|---|---|",
        f"| echo | {_f(e['direct_p50_ms'])} | {_f(e['router_p50_ms'])} | {_f(e['added_p50_ms'])} | "
        f"{_f(e['direct_p99_ms'])} | {_f(e['router_p99_ms'])} |",
    ]
    eng = results.get("engine", {})
    if "added_p50_ms" in eng:
        lines.append(f"| vLLM CPU engine (tiny model, 1 token) | {_f(eng['direct_p50_ms'])} | "
                     f"{_f(eng['router_p50_ms'])} | {_f(eng['added_p50_ms'])} | {_f(eng['direct_p99_ms'])} | "
                     f"{_f(eng['router_p99_ms'])} |")
    elif eng:
        lines.append(f"| vLLM CPU engine | {eng.get('skipped', '-')} | | | | |")
    lines += ["", f"Throughput, {e['concurrency']} concurrent clients for {e['seconds']:g} s, echo upstream:", "",
              "| path | requests/s |", "|---|---|",
              f"| direct | {_f(e['direct_rps'], '{:.0f}')} |", f"| via router | {_f(e['router_rps'], '{:.0f}')} |",
              f"| ratio router / direct | {_f(e['router_over_direct_rps'])} |", "",
              "Targets: added p50 <= 2 ms, >= 500 requests/s through one router process. The client, the router "
              "and the upstream share the machine's cores, so the figures are a floor for the router on its own "
              "core(s).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
