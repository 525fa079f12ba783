"""Overrides API latency: reads at 100 concurrent clients, writes at 10, on loopback.

    .venv/bin/python bench/api.py [--runs 5] [--mode sqlite kube] [--reads-per-client 20] [--writes-per-client 10]

The API (autoscaler.api, uvicorn, one process) runs in a child process; this process is the client
(aiohttp). Two backends:
- sqlite: the local mode (SQLite store and audit, static tokens);
- kube:   as the controller serves it (ScalingOverride and OverrideAuditRecord objects in a real
          kube-apiserver from tests/ground, callers checked with TokenReview + SubjectAccessReview,
          cached 10 s as in production). Every read lists the objects from the API server; every
          write creates the override and its audit record there.
Each run measures, in the same run:
- reads:  GET /v1/overrides?namespace=... (20 overrides present) from `--readers` clients;
  baseline: GET /healthz at the same concurrency (server and framework, no auth, no store);
  and the same read from one client alone (the service time, without queueing behind the others);
- writes: POST a prewarm override (then the run's overrides are deleted) from `--writers` clients;
  baseline: GET /healthz at the same concurrency, and in kube mode the API server's own create of
  the same object with the kubernetes client from `--writers` threads (the round trip the API adds to).
Targets (issue 12): reads p99 <= 50 ms, writes p99 <= 250 ms including the round trip to the API server.
Results: medians over runs with min-max, written to bench/results/api.{json,md}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
NAMESPACE = "bench"
OPERATOR_TOKEN = "bench-operator-token-0123456789"
READ_P99_TARGET_MS, WRITE_P99_TARGET_MS = 50.0, 250.0
PRESENT = 20


# ---------------------------------------------------------------------------- server (child process)
def _serve(mode: str, conf: dict, port_queue) -> None:
    import uvicorn

    from autoscaler.api import AutoscalerState, MemoryStatusSource, create_app
    from autoscaler.router.server import bind_socket

    status = MemoryStatusSource()
    status.update(AutoscalerState(namespace=NAMESPACE, name="llama", model="llama-8b", current=3, desired=3, ready=3,
                                  loading=0, min_replicas=1, max_replicas=10))
    if mode == "sqlite":
        from autoscaler.api.auth import StaticTokenAuth
        from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore
        store, audit = SqliteOverrideStore(conf["db"]), SqliteAuditLog(conf["db"])
        auth = StaticTokenAuth({OPERATOR_TOKEN: ("bench", "operator")})
    else:
        import kubernetes

        from autoscaler.api.auth import KubeAuth
        from autoscaler.overrides.kube import KubeAuditLog, KubeOverrideStore
        from autoscaler.overrides.watch import OverrideWatch
        config = kubernetes.client.Configuration()
        config.host, config.ssl_ca_cert = conf["server"], conf["ca_file"]
        config.api_key = {"authorization": f"Bearer {conf['token']}"}
        config.connection_pool_maxsize = 64
        client = kubernetes.client.ApiClient(config)
        # as ClusterApi serves it: overrides read from a watch of the objects, writes to the API server
        watch = OverrideWatch(client).start()
        if not watch.wait_synced(30):
            raise RuntimeError("the override watch did not list within 30 s")
        store, audit, auth = KubeOverrideStore(client, watch=watch), KubeAuditLog(client), KubeAuth(client)
    sock = bind_socket("127.0.0.1", 0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # as ClusterApi does
    port_queue.put(sock.getsockname()[1])
    app = create_app(store, audit, status, auth, title="bench")
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")).run(sockets=[sock])


def _start(mode: str, conf: dict):
    import httpx
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(mode, conf, q), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{q.get(timeout=60)}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the {mode} API did not start")


# ---------------------------------------------------------------------------- client
def _body(name: str) -> dict:
    return {"name": name, "target": "llama", "kind": "prewarm", "replicas": 2, "duration": "1h", "reason": "bench"}


async def _load(url: str, token: str, clients: int, per_client: int, request) -> list[float]:
    """`clients` concurrent clients, each with its own connection, `per_client` requests each; seconds per request."""
    import aiohttp

    latencies: list[float] = []

    async def client(index: int) -> None:
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(url, connector=conn, headers={"Authorization": f"Bearer {token}"}) as s:
            async with s.get("/healthz") as r:      # open the connection before the clock starts
                await r.read()
            for i in range(per_client):
                method, path, body = request(index, i)
                t = time.perf_counter()
                async with s.request(method, path, json=body) as r:
                    await r.read()
                    if r.status >= 300:
                        raise RuntimeError(f"{method} {path}: HTTP {r.status} {await r.text()}")
                latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(client(c) for c in range(clients)))
    return latencies


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(pid: int, run) -> tuple[list[float], float, float]:
    """Latencies of `run()`, the server's CPU milliseconds per request over it (its service time) and
    this client process's (aiohttp's share of the same cores)."""
    before, client_before = _cpu_s(pid), time.process_time()
    latencies = run()
    n = max(1, len(latencies))
    return latencies, 1000 * (_cpu_s(pid) - before) / n, 1000 * (time.process_time() - client_before) / n


def _ms(latencies: list[float]) -> dict:
    xs = sorted(latencies)
    return {"p50_ms": 1000 * statistics.median(xs), "p99_ms": 1000 * xs[min(len(xs) - 1, int(0.99 * len(xs)))],
            "requests": len(xs)}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def _kube_creates(conf: dict, writers: int, per_writer: int) -> list[float]:
    """The API server's own create of a ScalingOverride, from `writers` threads: the round trip the API adds to."""
    import kubernetes

    from autoscaler.overrides.kube import to_object
    from autoscaler.overrides.model import GROUP, PLURAL, VERSION
    config = kubernetes.client.Configuration()
    config.host, config.ssl_ca_cert = conf["server"], conf["ca_file"]
    config.api_key = {"authorization": f"Bearer {conf['admin_token']}"}
    config.connection_pool_maxsize = writers
    api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))

    def one(_: int) -> float:
        from datetime import datetime, timedelta, timezone

        from autoscaler.contract import OverrideKind
        from autoscaler.overrides.model import ScalingOverride
        now = datetime.now(timezone.utc)
        ov = ScalingOverride(namespace=NAMESPACE, name=f"raw-{uuid.uuid4().hex[:10]}", target="llama",
                             kind=OverrideKind.PREWARM, replicas=2, expires_at=now + timedelta(hours=1), reason="bench",
                             author="bench", created_at=now)
        t = time.perf_counter()
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, to_object(ov))
        return time.perf_counter() - t

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(one, range(writers)))                  # warm the connections
        return list(pool.map(one, range(writers * per_writer)))


def _delete_all(url: str, conf: dict, mode: str, keep: set[str]) -> None:
    """Remove what the writes made, so every run reads the same list."""
    import httpx
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN if mode == 'sqlite' else conf['operator_token']}"}
    names: list[str] = []
    token = None
    while True:
        page = httpx.get(f"{url}/v1/overrides", params={"namespace": NAMESPACE, "limit": 1000,
                                                        **({"continue": token} if token else {})},
                         headers=headers, timeout=60).json()
        names += [o["name"] for o in page["items"]]
        token = page.get("continue")
        if not token:
            break
    with httpx.Client(headers=headers, timeout=60) as c:
        for name in names:
            if name not in keep:
                c.delete(f"{url}/v1/namespaces/{NAMESPACE}/overrides/{name}")


def bench_mode(mode: str, conf: dict, args) -> dict:
    proc, url = _start(mode, conf)
    token = OPERATOR_TOKEN if mode == "sqlite" else conf["operator_token"]
    try:
        present = [f"present-{i:02d}" for i in range(PRESENT)]
        asyncio.run(_load(url, token, 1, PRESENT, lambda c, i: ("POST", f"/v1/namespaces/{NAMESPACE}/overrides",
                                                               _body(present[i]))))
        read_path = f"/v1/overrides?namespace={NAMESPACE}"
        rows: dict[str, dict[str, list[float]]] = {}

        def record(name: str, measured: tuple[list[float], float, float] | list[float]) -> None:
            latencies, cpu_ms, client_ms = measured if isinstance(measured, tuple) else (measured, None, None)
            stats = _ms(latencies)
            if cpu_ms is not None:
                stats["server_cpu_ms_per_request"] = cpu_ms
                stats["client_cpu_ms_per_request"] = client_ms
            for key, value in stats.items():
                if key != "requests":
                    rows.setdefault(name, {}).setdefault(key, []).append(value)

        def load(clients: int, per_client: int, request) -> tuple[list[float], float, float]:
            return _measured(proc.pid, lambda: asyncio.run(_load(url, token, clients, per_client, request)))

        for run in range(args.runs):
            record("reads_one_client", load(1, args.readers * args.reads_per_client // 10,
                                            lambda c, i: ("GET", read_path, None)))
            record("reads_healthz_baseline", load(args.readers, args.reads_per_client,
                                                  lambda c, i: ("GET", "/healthz", None)))
            record("reads", load(args.readers, args.reads_per_client, lambda c, i: ("GET", read_path, None)))
            record("writes_healthz_baseline", load(args.writers, args.writes_per_client,
                                                   lambda c, i: ("GET", "/healthz", None)))
            tag = uuid.uuid4().hex[:6]
            record("writes", load(args.writers, args.writes_per_client,
                                  lambda c, i: ("POST", f"/v1/namespaces/{NAMESPACE}/overrides",
                                                _body(f"w-{tag}-{c}-{i}"))))
            if mode == "kube":
                record("writes_api_server_create_baseline", _kube_creates(conf, args.writers, args.writes_per_client))
            _delete_all(url, conf, mode, keep=set(present))
            print(f"{mode} run {run + 1}/{args.runs}: reads p99 {rows['reads']['p99_ms'][-1]:.1f} ms, "
                  f"writes p99 {rows['writes']['p99_ms'][-1]:.1f} ms", flush=True)
        out = {name: {k: _summary(v) for k, v in stats.items()} for name, stats in rows.items()}
        out["reads"]["ratio_p99_to_baseline"] = (out["reads"]["p99_ms"]["median"]
                                                 / out["reads_healthz_baseline"]["p99_ms"]["median"])
        base = "writes_api_server_create_baseline" if mode == "kube" else "writes_healthz_baseline"
        out["writes"]["ratio_p99_to_baseline"] = out["writes"]["p99_ms"]["median"] / out[base]["p99_ms"]["median"]
        out["writes"]["baseline"] = base
        out["reads"]["meets_target"] = out["reads"]["p99_ms"]["median"] <= READ_P99_TARGET_MS
        out["writes"]["meets_target"] = out["writes"]["p99_ms"]["median"] <= WRITE_P99_TARGET_MS
        return out
    finally:
        proc.terminate()
        proc.join(10)


def _kube_conf(stack, workdir: Path) -> dict:
    import kubernetes

    from tests.api.cluster import bound_account, install_shipped, token_of
    from tests.ground.kube import start_cluster
    cluster = stack.enter_context(start_cluster(workdir))
    install_shipped(cluster)
    kubernetes.client.CoreV1Api(cluster.api_client()).create_namespace({"metadata": {"name": NAMESPACE}})
    operator = bound_account(cluster, NAMESPACE, "operator", "warmscale-override-operator")
    api = bound_account(cluster, NAMESPACE, "warmscale-api", "warmscale-override-api-server", cluster_wide=True)
    return {"server": cluster.server, "ca_file": str(cluster.ca_file), "token": token_of(api),
            "admin_token": cluster.admin_token, "operator_token": token_of(operator)}


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def main(argv: list[str] | None = None) -> int:
    import contextlib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mode", nargs="+", choices=["sqlite", "kube"], default=["sqlite", "kube"])
    ap.add_argument("--readers", type=int, default=100)
    ap.add_argument("--reads-per-client", type=int, default=20)
    ap.add_argument("--writers", type=int, default=10)
    ap.add_argument("--writes-per-client", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS / "api")
    ap.add_argument("--compare", type=Path, default=None,
                    help="an earlier results JSON (e.g. `git show HEAD:bench/results/api.json`): shown beside this run")
    args = ap.parse_args(argv)

    t0 = time.time()
    results: dict = {"how": {
        "command": "bench/api.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_before": _load_average(), "runs": args.runs, "readers": args.readers,
        "reads_per_client": args.reads_per_client, "writers": args.writers,
        "writes_per_client": args.writes_per_client, "overrides_present": PRESENT,
        "targets_ms": {"reads_p99": READ_P99_TARGET_MS, "writes_p99": WRITE_P99_TARGET_MS}}}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        for mode in args.mode:
            conf = {"db": str(Path(tmp) / "bench.db")} if mode == "sqlite" else _kube_conf(stack, Path(tmp) / "k8s")
            results[mode] = bench_mode(mode, conf, args)
    results["how"]["load_average_after"] = _load_average()
    results["how"]["wall_s"] = round(time.time() - t0, 1)
    if args.compare is not None:
        earlier = json.loads(args.compare.read_text())
        results["earlier"] = {k: v for k, v in earlier.items() if k != "earlier"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(results))
    print(render(results))
    return 0


def _f(s: dict) -> str:
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


_ROWS = (("reads_one_client", ""), ("reads_healthz_baseline", ""), ("reads", f"<= {READ_P99_TARGET_MS:g}"),
         ("writes_healthz_baseline", ""), ("writes_api_server_create_baseline", ""),
         ("writes", f"<= {WRITE_P99_TARGET_MS:g}"))


def _cpu(row: dict) -> str:
    return _f(row["server_cpu_ms_per_request"]) if "server_cpu_ms_per_request" in row else "-"


def _bound(results: dict) -> list[str]:
    """What this machine allows: in a closed loop of N clients a request waits for the N - 1 others,
    so the mean latency is at least N x the server's CPU time per request (one process: one core at a
    time for Python code); GET /healthz, which does no work at all, measured at the same concurrency
    in the same run, is the floor any route can reach."""
    how, out = results["how"], []
    for mode in ("sqlite", "kube"):
        r = results.get(mode)
        if not r or "server_cpu_ms_per_request" not in r.get("reads", {}):
            continue
        reads, healthz = r["reads"], r["reads_healthz_baseline"]
        out.append(f"- {mode}: reads p99 {reads['p99_ms']['median']:.1f} ms against GET /healthz p99 "
                   f"{healthz['p99_ms']['median']:.1f} ms at the same concurrency ({reads['ratio_p99_to_baseline']:.2f}x); "
                   f"server CPU per read {reads['server_cpu_ms_per_request']['median']:.2f} ms, per /healthz "
                   f"{healthz['server_cpu_ms_per_request']['median']:.2f} ms; {how['readers']} clients x the read's CPU "
                   f"time = {how['readers'] * reads['server_cpu_ms_per_request']['median']:.0f} ms, the mean latency "
                   "the server alone imposes"
                   + (f"; the client process spends {reads['client_cpu_ms_per_request']['median']:.2f} ms of CPU per "
                      f"read ({how['readers'] * reads['client_cpu_ms_per_request']['median']:.0f} ms for {how['readers']})"
                      if "client_cpu_ms_per_request" in reads else "") + ".")
    if out:
        out = ["## The bound on this machine", "",
               "In a closed loop of N clients each request waits for the others: mean latency >= N x the server's "
               "CPU time per request (one Python process). GET /healthz (no auth, no store, no work) at the same "
               "concurrency in the same run is the floor for any route; the 100 clients (aiohttp) share the same "
               "cores.", ""] + out + [""]
    return out


def render(results: dict) -> str:
    how = results["how"]
    lines = ["# Overrides API latency (bench/api.py)", "",
             f"`{how['command']}` on {how['machine']}; load average before {how['load_average_before']}, "
             f"after {how['load_average_after']}; {how['runs']} runs, {how['wall_s']} s.",
             f"Reads: {how['readers']} concurrent clients x {how['reads_per_client']} GET /v1/overrides "
             f"({how['overrides_present']} present). Writes: {how['writers']} clients x {how['writes_per_client']} POST. "
             "Milliseconds, median over runs (min-max). Server CPU: the API process's CPU time (all threads) over "
             "the measurement divided by its requests, its service time whatever the queueing.", "",
             "| backend | measurement | p50 ms | p99 ms | server CPU ms / request | target p99 | p99 / baseline |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode in ("sqlite", "kube"):
        if mode not in results:
            continue
        r = results[mode]
        for name, target in _ROWS:
            if name not in r:
                continue
            row = r[name]
            ratio = f"{row['ratio_p99_to_baseline']:.1f}x" if "ratio_p99_to_baseline" in row else ""
            verdict = f"{target} ({'met' if row.get('meets_target') else 'NOT met'})" if target else ""
            lines.append(f"| {mode} | {name} | {_f(row['p50_ms'])} | {_f(row['p99_ms'])} | {_cpu(row)} | {verdict} "
                         f"| {ratio} |")
    lines += ["", "Baselines: reads against GET /healthz at the same concurrency (no auth, no store); writes in "
              "kube mode against the API server's own create of the same object from the same number of threads. "
              "reads_one_client: the same read from a single client (service time without queueing).", ""]
    lines += _bound(results)
    earlier = results.get("earlier")
    if earlier:
        eh = earlier["how"]
        lines += ["## Against the earlier results", "",
                  f"Earlier: `{eh['command']}`, load average before {eh['load_average_before']}, after "
                  f"{eh['load_average_after']}. Medians over runs; p99 / baseline as above. GET /healthz was a "
                  "plain `def` route then (a worker thread per request) and is `async` now: the floor itself moved.", "",
                  "| backend | measurement | p50 ms before | p50 ms now | p99 ms before | p99 ms now "
                  "| p99 / baseline before | p99 / baseline now |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for mode in ("sqlite", "kube"):
            if mode not in results or mode not in earlier:
                continue
            for name, _ in _ROWS:
                if name not in results[mode] or name not in earlier[mode]:
                    continue
                a, b = earlier[mode][name], results[mode][name]
                ra = f"{a['ratio_p99_to_baseline']:.1f}x" if "ratio_p99_to_baseline" in a else ""
                rb = f"{b['ratio_p99_to_baseline']:.1f}x" if "ratio_p99_to_baseline" in b else ""
                lines.append(f"| {mode} | {name} | {a['p50_ms']['median']:.1f} | {b['p50_ms']['median']:.1f} "
                             f"| {a['p99_ms']['median']:.1f} | {b['p99_ms']['median']:.1f} | {ra} | {rb} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
