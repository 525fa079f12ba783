#!/usr/bin/env python
"""Scale from zero in a cluster: how long a request that finds its model at zero waits, with the
router's poke (status.activation) and without it. A measurement, not a test.

    .venv/bin/python bench/activation.py                 # 5 runs per arm, interleaved
    .venv/bin/python bench/activation.py --runs 1        # a short try

Test ground: kube-apiserver + controller-manager + scheduler + kwok fake GPU nodes, Prometheus
scraping every 15 s (the production default, not the ground's 1 s), and an echo engine on loopback
that answers at once. Each run is a fresh namespace with a Deployment at 0 replicas whose pods turn
Ready `--ready-after` seconds after they start (kwok; the cold start, fixed so that only the
decision path differs), its ModelAutoscaler (minReplicas 0, metrics through Prometheus), the
controller at its shipped 5 s interval and `warmscale router` in front of it. Once Prometheus has
scraped the router and the controller has ticked, the request is sent after a random pause of up to
one scrape interval (seeded per run: a request lands anywhere between two scrapes, not always just
after one); measured: seconds until its answer (the time to first
token of a request at zero, the engine's own time being ~0) and until the controller's scale write.

Arms, in the same run:
* poke: the router writes status.activation when it starts holding the request; the controller's
  watch decides at once;
* metrics only: no poke; the controller learns of the held request from the router's
  warmscale_router_held_requests gauge through Prometheus (scrape interval, then its next tick).

Writes bench/results/activation.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
ARMS = ("poke", "metrics_only")
INTERVAL_S = 5.0
SCRAPE_S = 15.0


def one_run(cluster, prometheus, echo_url: str, arm: str, index: int, ready_after_s: float, log) -> dict:
    import random

    import httpx
    import kubernetes

    from autoscaler.controller.loop import Controller, ControllerConfig
    from autoscaler.router.cluster import ClusterRouter
    from tests.e2e.conftest import create_ma, engine_deployment, model_autoscaler
    from tests.e2e.test_controller import TINY_CAPACITY

    admin = cluster.api_client()
    namespace, model = f"act-{arm.replace('_', '-')}-{index}", f"m-{arm.replace('_', '-')}-{index}"
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    apps = kubernetes.client.AppsV1Api(admin)
    apps.create_namespaced_deployment(namespace, engine_deployment("engine", 0, ready_after=f"{ready_after_s:g}s"))
    create_ma(admin, namespace, model_autoscaler("engine", model, "engine", minReplicas=0, scaleToZero={"enabled": True},
                                                 capacity=TINY_CAPACITY, metrics={"source": "prometheus"}))
    config = ControllerConfig(namespace=namespace, interval_s=INTERVAL_S, metrics_host="127.0.0.1", metrics_port=0,
                              lease_namespace=namespace, identity=f"ctl-{namespace}", prometheus_url=prometheus.url)
    with contextlib.ExitStack() as stack:
        controller = Controller(config, admin).start()
        stack.callback(controller.stop)
        router = ClusterRouter(admin, namespace, "127.0.0.1", 0, engine_url_template=echo_url,
                               identity=f"router-{namespace}", poke=(arm == "poke")).start()
        stack.callback(router.stop)
        address = router.url.removeprefix("http://")
        prometheus.add_target(address)
        prometheus.wait_for_series(f'up{{instance="{address}"}}', timeout_s=60, predicate=lambda v: v == 1)
        deadline = time.monotonic() + 30
        while not (controller.elector.is_leader() and controller._ready() and controller.ticks > 0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{namespace}: the controller did not lead and tick within 30 s")
            time.sleep(0.05)
        pause = random.Random(index).uniform(0.0, SCRAPE_S)   # the same phase for both arms of a run
        time.sleep(pause)
        scaled: list[float] = []
        started = time.monotonic()
        with httpx.Client(timeout=300) as client:
            watcher = _watch_scale(apps, namespace, started, scaled)
            response = client.post(f"{router.url}/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 1})
            answered = time.monotonic() - started
            watcher.join(timeout=5)
        if response.status_code != 200:
            raise RuntimeError(f"{namespace}: the router answered {response.status_code}: {response.text[:200]}")
        writes = controller.metrics.activations._value.get()
    kubernetes.client.CoreV1Api(admin).delete_namespace(namespace)
    row = {"arm": arm, "run": index, "pause_s": round(pause, 3), "answered_s": round(answered, 3),
           "scale_written_s": round(scaled[0], 3) if scaled else None, "pokes_seen": int(writes)}
    log(f"{arm} run {index}: answered after {row['answered_s']} s, scale written after {row['scale_written_s']} s")
    return row


def _watch_scale(apps, namespace: str, started: float, out: list[float]):
    """A thread noting when the Deployment's spec.replicas first turns non-zero."""
    import threading

    def poll() -> None:
        deadline = started + 300
        while time.monotonic() < deadline:
            if apps.read_namespaced_deployment_scale("engine", namespace).spec.replicas:
                out.append(time.monotonic() - started)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


def summarise(rows: list[dict]) -> dict:
    out = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        for field in ("answered_s", "scale_written_s"):
            values = [r[field] for r in mine if r[field] is not None]
            if values:
                out.setdefault(arm, {})[field] = {"median": round(statistics.median(values), 3),
                                                  "min": min(values), "max": max(values), "n": len(values)}
    if all(arm in out for arm in ARMS):
        out["ratio_metrics_only_vs_poke"] = round(out["metrics_only"]["answered_s"]["median"]
                                                  / out["poke"]["answered_s"]["median"], 2)
    return out


def render(doc: dict) -> str:
    s = doc["summary"]
    lines = ["# Scale from zero in a cluster: the router's poke against metrics only (bench/activation.py)", "",
             f"Test ground: real kube-apiserver, controller-manager, scheduler, kwok GPU nodes; Prometheus scraping "
             f"every {SCRAPE_S:g} s; controller interval {INTERVAL_S:g} s, metrics through Prometheus; pods Ready "
             f"{doc['ready_after_s']:g} s after they start; an echo engine on loopback. {doc['runs']} runs per arm, "
             f"interleaved, one request each; medians [min-max]. Machine: {doc['machine']}.", "",
             "| arm | request at zero answered after | scale written after | runs |", "|---|---|---|---|"]
    for arm in ARMS:
        if arm not in s:
            continue
        a, w = s[arm]["answered_s"], s[arm].get("scale_written_s")
        written = f"{w['median']:.2f} s [{w['min']:.2f}-{w['max']:.2f}]" if w else "-"
        lines.append(f"| {arm.replace('_', ' ')} | {a['median']:.2f} s [{a['min']:.2f}-{a['max']:.2f}] | {written} | {a['n']} |")
    if "ratio_metrics_only_vs_poke" in s:
        lines += ["", f"Metrics only takes {s['ratio_metrics_only_vs_poke']:.2f}x as long as the poke (medians, same run)."]
    lines += ["", "What each arm waits for before the scale write: the poke, one API write and the controller's watch "
              "event; metrics only, the next Prometheus scrape of the router (0-15 s), then the controller's next tick "
              "(0-5 s). After the write both wait the same: the ReplicaSet, the scheduler, kwok's Ready, the router's "
              "pod watch.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="exit codes: 0 done, 2 bad arguments, 3 the test ground failed to start")
    parser.add_argument("--runs", type=int, default=5, help="runs per arm (default 5)")
    parser.add_argument("--ready-after", type=float, default=1.0, help="seconds from pod start to Ready (default 1)")
    parser.add_argument("--out", default="activation", help="results file stem under bench/results")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.ready_after < 0:
        print(f"error: --runs must be >= 1 and --ready-after >= 0, got {args.runs} and {args.ready_after}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    from autoscaler.router.echo import echo_app
    from autoscaler.router.server import ThreadedServer, bind_socket
    from tests.ground.kube import start_cluster
    from tests.ground.prometheus import start_prometheus
    sys.path.insert(0, str(ROOT / "bench"))
    from controller_agreement import install_crd

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="activation-") as tmp, contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(start_cluster(Path(tmp) / "k8s"))
            prometheus = stack.enter_context(start_prometheus(Path(tmp) / "prometheus", scrape_interval_s=SCRAPE_S))
        except Exception as exc:  # noqa: BLE001 - any start-up failure of the ground
            print(f"error: the test ground did not start: {exc}", file=sys.stderr)
            return 3
        cluster.add_gpu_nodes(1, gpus_per_node=8, prefix="act-gpu")
        install_crd(cluster.api_client())
        echo = stack.enter_context(ThreadedServer(echo_app("echo"), bind_socket("127.0.0.1", 0), name="echo"))
        for index in range(args.runs):
            for arm in (ARMS if index % 2 == 0 else ARMS[::-1]):
                rows.append(one_run(cluster, prometheus, echo.url, arm, index, args.ready_after, log))
    doc = {"bench": "activation", "runs": args.runs, "ready_after_s": args.ready_after, "interval_s": INTERVAL_S,
           "scrape_interval_s": SCRAPE_S, "machine": f"{platform.machine()}, {platform.python_version()}",
           "rows": rows, "summary": summarise(rows)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
