#!/usr/bin/env python
"""Controller at scale: N ModelAutoscalers over N Deployments (one fake pod each, kwok nodes) on the
test ground's real control plane; `warmscale controller` runs as its own process (as in a pod) and
direct-scrapes every Ready pod through a fleet emulator on loopback. A measurement, not a test.

    .venv/bin/python bench/controller_scale.py --models 1000
    .venv/bin/python bench/controller_scale.py --models 100 --ticks 8      # a short try

Measured per tick, from the controller's own /metrics (sampled after every tick): wall time of the
tick over every model, API writes by kind, and how many models' desired replicas changed; the
controller process's RSS from /proc. Demand: all models idle at minReplicas; at `--burst-tick` a
share of the models (`--burst-share`) get a queue, so their decisions change while the rest hold.
Baseline in the same run: the idle ticks before the burst (no decision changes), whose writes
per tick should be ~0 and whose tick time is the floor of sensing N models.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
NAMESPACE = "scale"
TINY_CAPACITY = {"maxNumSeqs": 4, "kvCacheTokens": 8192, "prefillTokensPerSecond": 27000, "decodeTokensPerSecond": 1500}
TARGETS = {"tick_p99_s": 5.0, "rss_mb": 300.0}
# What a model's status shows besides its desired replicas: a change in any of them is a status write.
OBSERVED_GAUGES = ("warmscale_controller_current_replicas", "warmscale_controller_ready_replicas",
                   "warmscale_controller_unschedulable_replicas", "warmscale_controller_decision_reason")


def deployment(name: str) -> dict:
    from tests.ground.kube import READY_DELAY_ANNOTATION

    labels = {"app": name}
    return {"metadata": {"name": name}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels, "annotations": {READY_DELAY_ANNOTATION: "0s"}},
                     "spec": {"terminationGracePeriodSeconds": 0, "tolerations": [{"operator": "Exists"}],
                              "nodeSelector": {"warmscale.io/fake-node": "kwok"},
                              "containers": [{"name": "engine", "image": "vllm/vllm-openai:latest"}]}}}}


def autoscaler(name: str) -> dict:
    from autoscaler.controller.crd import GROUP, KIND, VERSION

    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "model": name,
            "selector": {"matchLabels": {"app": name}}, "minReplicas": 1, "maxReplicas": 3,
            "capacity": TINY_CAPACITY, "coldStart": {"seconds": 1}, "slo": {"ttftSeconds": 120.0},
            "metrics": {"source": "direct"}}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


def install(cluster) -> None:
    from tests.e2e.conftest import INSTALLED_KINDS, MANIFESTS, create_or_replace, dynamic, wait_crds_established
    from tests.e2e.kustomize import render

    admin = dynamic(cluster.api_client())
    objects = [o for o in render(MANIFESTS) if o["kind"] in INSTALLED_KINDS]
    for obj in objects:
        create_or_replace(admin, obj)
    wait_crds_established(cluster.api_client(), [o["metadata"]["name"] for o in objects
                                                 if o["kind"] == "CustomResourceDefinition"])


def create_fleet(cluster, n: int, log) -> list[str]:
    import kubernetes
    from concurrent.futures import ThreadPoolExecutor

    from autoscaler.controller.crd import GROUP, PLURAL, VERSION

    client = cluster.api_client()
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}})
    apps, custom = kubernetes.client.AppsV1Api(client), kubernetes.client.CustomObjectsApi(client)
    names = [f"m-{i:04d}" for i in range(n)]

    def make(name: str) -> None:
        apps.create_namespaced_deployment(NAMESPACE, deployment(name))
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, autoscaler(name))

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, names))
    log(f"created {n} Deployments + ModelAutoscalers in {time.monotonic() - t0:.0f} s")
    return names


def ready_pods(cluster) -> dict[str, list[str]]:
    import kubernetes

    from tests.ground.fleet import pod_ready

    pods: dict[str, list[str]] = {}
    for p in kubernetes.client.CoreV1Api(cluster.api_client()).list_namespaced_pod(NAMESPACE).items:
        if pod_ready(p):
            pods.setdefault(p.metadata.labels["app"], []).append(p.metadata.name)
    return pods


def wait_ready(cluster, n: int, timeout_s: float, log) -> dict[str, list[str]]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        pods = ready_pods(cluster)
        if len(pods) >= n:
            log(f"{n} pods Ready after {time.monotonic() - t0:.0f} s")
            return pods
        time.sleep(5)
    raise TimeoutError(f"only {len(ready_pods(cluster))} of {n} models have a Ready pod after {timeout_s} s")


class ControllerProcess:
    """`python -m autoscaler.controller` as the shipped ServiceAccount; /metrics sampled per tick."""

    def __init__(self, kubeconfig: Path, template: str, interval_s: float, port: int, workers: int, log_path: Path):
        self.port = port
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autoscaler.controller", "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE,
             "--lease-namespace", "warmscale-system", "--interval", str(interval_s), "--metrics-host", "127.0.0.1",
             "--metrics-port", str(port),
             "--metrics-url-template", template, "--workers", str(workers), "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def metrics(self) -> dict:
        """The counters the benchmark reads from the controller's /metrics. A plain line scan: the
        general parser takes ~1 s for 1,000 models' series, CPU the emulator in this process needs."""
        import re

        import httpx

        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        out = {"writes": {}, "desired": {}, "observed": {}, "tick_count": 0.0, "tick_sum": 0.0, "errors": 0.0}
        label = re.compile(r'(\w+)="([^"]*)"')
        for line in text.splitlines():
            if not line.startswith("warmscale_controller_"):
                continue
            head, _, value = line.rpartition(" ")
            name, _, labels = head.partition("{")
            if name == "warmscale_controller_tick_seconds_count":
                out["tick_count"] = float(value)
            elif name == "warmscale_controller_tick_seconds_sum":
                out["tick_sum"] = float(value)
            elif name == "warmscale_controller_api_writes_total":
                out["writes"][dict(label.findall(labels))["kind"]] = float(value)
            elif name == "warmscale_controller_desired_replicas":
                out["desired"][dict(label.findall(labels)).get("name", "")] = float(value)
            elif name in OBSERVED_GAUGES:
                labelled = dict(label.findall(labels))
                if name != "warmscale_controller_decision_reason" or float(value) == 1:
                    out["observed"].setdefault(labelled.get("name", ""), {})[name] = labelled.get("reason", value)
            elif name == "warmscale_controller_errors_total":
                out["errors"] += float(value)
        return out

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


FLOOR_SCRIPT = """
import json, statistics, sys, time
from autoscaler.metrics.scrape import Scraper
urls, model_of, rounds, workers = json.loads(sys.stdin.read())
times = []
with Scraper(timeout_s=5.0, max_workers=workers) as scraper:
    for _ in range(rounds):
        t0 = time.perf_counter()
        futures = [scraper._pool.submit(scraper.scrape_one, pod, url, model_of[pod]) for pod, url in urls.items()]
        bad = sum(f.result().sample is None for f in futures)
        times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "failed": bad}))
"""


def scrape_floor(emulator, pods: dict[str, list[str]], rounds: int, workers: int) -> dict:
    """Baseline in the same run: one scrape of every Ready pod through the emulator, with the
    controller's own scraper code and pool size, from a separate process (as the controller is)
    and nothing else of the controller. The emulated engines' serving time is a floor no tick
    can go under on this machine."""
    urls = {p: emulator.metrics_url_template.format(name=p, namespace=NAMESPACE, ip="")
            for ps in pods.values() for p in ps}
    model_of = {p: name for name, ps in pods.items() for p in ps}
    out = subprocess.run([sys.executable, "-c", FLOOR_SCRIPT], input=json.dumps([urls, model_of, rounds, workers]),
                         capture_output=True, text=True, cwd=ROOT, timeout=600, check=True)
    return json.loads(out.stdout)


def next_tick(ctl: ControllerProcess, after: float, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            m = ctl.metrics()
            if m["tick_count"] > after:
                return m
        if ctl.proc.poll() is not None:
            raise RuntimeError(f"the controller exited with {ctl.proc.returncode}")
        time.sleep(1.0)      # each poll renders every model's series in the controller (~70 ms at 1,000): not 10 a second
    raise TimeoutError(f"no tick within {timeout_s} s")


def measure(ctl: ControllerProcess, emulator, names: list[str], ticks: int, burst_tick: int, burst_share: float,
            interval_s: float, log) -> list[dict]:
    m = next_tick(ctl, 0, 300)
    rows = []
    burst = names[:max(1, round(len(names) * burst_share))]
    for k in range(ticks):
        if k == burst_tick:
            for name in burst:
                for _ in range(24):
                    emulator.submit(name, 400, 1000)
        nxt = next_tick(ctl, m["tick_count"], 10 * interval_s + 120)
        ticks_done = nxt["tick_count"] - m["tick_count"]
        writes = {kind: nxt["writes"].get(kind, 0) - m["writes"].get(kind, 0) for kind in set(nxt["writes"]) | set(m["writes"])}
        changed = sum(1 for name, v in nxt["desired"].items() if m["desired"].get(name) != v)
        changed_status = sum(1 for name, v in nxt["desired"].items()
                             if m["desired"].get(name) != v or m["observed"].get(name) != nxt["observed"].get(name))
        row = {"tick": k, "ticks_seen": ticks_done, "tick_s": (nxt["tick_sum"] - m["tick_sum"]) / max(ticks_done, 1),
               "changed_decisions": changed, "changed_statuses": changed_status, "writes": writes, "writes_total": sum(writes.values()),
               "rss_mb": ctl.rss_mb(), "errors": nxt["errors"], "models_seen": len(nxt["desired"]),
               "burst": k == burst_tick}
        rows.append(row)
        log(f"tick {k:2d}: {row['tick_s']:.2f} s, changed {changed}, writes {row['writes_total']:.0f} {writes}, "
            f"RSS {row['rss_mb']:.0f} MB")
        m = nxt
    return rows


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def summarize(rows: list[dict], n: int, args) -> dict:
    warm = rows[1:]                          # the first tick builds every model's sensor and policy
    tick_s = [r["tick_s"] for r in warm]
    idle = [r for r in warm if r["changed_decisions"] == 0]
    active = [r for r in warm if r["changed_decisions"] > 0]
    def per(kind: str, rows: list[dict], count: str) -> list[float]:
        return [r["writes"].get(kind, 0) / r[count] for r in rows if r[count]]

    scale, events, status = per("scale", active, "changed_decisions"), per("event", active, "changed_decisions"), \
        per("status", warm, "changed_statuses")
    return {
        "models": n, "interval_s": args.interval, "ticks": len(rows), "workers": args.workers,
        "tick_s": {"median": statistics.median(tick_s), "min": min(tick_s), "max": max(tick_s), "p99": p99(tick_s)},
        "first_tick_s": rows[0]["tick_s"],
        "rss_mb": {"max": max(r["rss_mb"] for r in rows), "median": statistics.median(r["rss_mb"] for r in rows)},
        "baseline_idle_ticks": {"count": len(idle), "writes_per_tick_median": statistics.median(
            [r["writes_total"] for r in idle]) if idle else None,
            "tick_s_median": statistics.median([r["tick_s"] for r in idle]) if idle else None},
        "changed_ticks": {"count": len(active), "scale_writes_per_changed_decision": _spread_of(scale),
                          "events_per_changed_decision": _spread_of(events),
                          "status_writes_per_changed_status": _spread_of(status)},
        "errors": rows[-1]["errors"], "targets": TARGETS,
        "meets": {"tick_p99": p99(tick_s) <= TARGETS["tick_p99_s"],
                  "rss": max(r["rss_mb"] for r in rows) <= TARGETS["rss_mb"]},
        "rows": rows,
    }


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or "unknown"


def _spread_of(values: list[float]) -> dict | None:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


def _ratio_cell(spread: dict | None) -> str:
    return "-" if spread is None else f"{spread['median']:.2f} (range {spread['min']:.2f}-{spread['max']:.2f})"


def write_report(result: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    t, b, c = result["tick_s"], result["baseline_idle_ticks"], result["changed_ticks"]
    lines = [f"# Controller at scale: {result['models']} ModelAutoscalers", "",
             f"Machine: {os.cpu_count()} cores (shared); control plane, kwok, emulator and controller on one box. "
             f"Interval {result['interval_s']} s, {result['workers']} workers, direct scrapes of every Ready pod.", "",
             "| measure | value | target |", "|---|---|---|",
             f"| tick wall time p99 (warm ticks) | {t['p99']:.2f} s (median {t['median']:.2f}, range {t['min']:.2f}-{t['max']:.2f}) | <= 5 s |",
             f"| first tick (builds every model) | {result['first_tick_s']:.2f} s | |",
             f"| baseline: one scrape of every pod, the controller's scraper alone (same run, 5 rounds) | "
             f"{result['scrape_floor']['median_s']:.2f} s (range {result['scrape_floor']['min_s']:.2f}-"
             f"{result['scrape_floor']['max_s']:.2f}) | |",
             f"| tick median / scrape floor | {t['median'] / result['scrape_floor']['median_s']:.2f} | |",
             f"| controller RSS max | {result['rss_mb']['max']:.0f} MB (median {result['rss_mb']['median']:.0f}) | <= 300 MB |",
             f"| API writes per idle tick (baseline, {b['count']} ticks) | {b['writes_per_tick_median']} | ~0 |",
             f"| scale writes per changed decision ({c['count']} ticks) | {_ratio_cell(c['scale_writes_per_changed_decision'])} | 1 |",
             f"| Events per changed decision | {_ratio_cell(c['events_per_changed_decision'])} | 1 |",
             f"| status writes per model whose status changed (decision, ready/starting/pending count or reason) | "
             f"{_ratio_cell(c['status_writes_per_changed_status'])} | <= 1 |",
             f"| errors | {result['errors']:.0f} | 0 |", "",
             "| tick | changed decisions | changed statuses | writes by kind | tick s | RSS MB |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        kinds = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["writes"].items()) if v)
        lines.append(f"| {r['tick']}{' (burst)' if r['burst'] else ''} | {r['changed_decisions']} | {r['changed_statuses']} | {kinds or '-'} | "
                     f"{r['tick_s']:.2f} | {r['rss_mb']:.0f} |")
    lines += ["", "The scrape floor is the emulated engines' serving time for one round of N scrapes, measured with "
              "the controller's own scraper in its own process and nothing else of the controller. A tick scrapes "
              "every model's Ready pods in one round, then lets each model decide, so a tick cannot be shorter than "
              "the floor on this machine; control plane, kwok, emulator and controller share the same 2 cores. RSS "
              "grows while the sample histories fill (twice the 60 s rate window: 24 ticks of 5 s), then holds.", "",
              f"Made by `bench/controller_scale.py {' '.join(sys.argv[1:])}` at commit {_commit()}."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--burst-tick", type=int, default=4)
    parser.add_argument("--burst-share", type=float, default=0.1)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--ready-timeout", type=float, default=900)
    parser.add_argument("--out", default="controller_scale")
    args = parser.parse_args(argv)
    if args.models < 1 or args.ticks < 3 or not 0 < args.burst_share <= 1 or not 1 <= args.burst_tick < args.ticks:
        print("controller_scale: need --models >= 1, --ticks >= 3, 0 < --burst-share <= 1, "
              "1 <= --burst-tick < --ticks", file=sys.stderr)
        return 2

    from autoscaler.sim.emulator import FleetEmulator
    from autoscaler.sim.profile import load_profile
    from tests.e2e.conftest import CONTROLLER_NS, CONTROLLER_SA
    from tests.ground.kube import start_cluster
    from tests.ground.procs import free_port

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ctl-scale-") as tmp, start_cluster(Path(tmp)) as cluster:
        install(cluster)
        cluster.add_gpu_nodes(-(-args.models // 100), gpus_per_node=8, prefix="scale")
        names = create_fleet(cluster, args.models, log)
        pods = wait_ready(cluster, args.models, args.ready_timeout, log)
        token = cluster.as_service_account(CONTROLLER_NS, CONTROLLER_SA, create=False) \
            .configuration.api_key["authorization"].removeprefix("Bearer ")
        kubeconfig = cluster.write_kubeconfig(Path(tmp) / "sa.kubeconfig", token=token, user=CONTROLLER_SA)
        with FleetEmulator(load_profile("tiny-llama-cpu"), namespace=NAMESPACE) as emulator:
            for name in names:
                emulator.set_pods(name, {p: True for p in pods.get(name, [])})
            floor = scrape_floor(emulator, pods, rounds=5, workers=max(16, 2 * args.workers))
            log(f"scrape floor (every pod once, the controller's scraper alone): median {floor['median_s']:.2f} s "
                f"(range {floor['min_s']:.2f}-{floor['max_s']:.2f}), failed {floor['failed']}")
            ctl = ControllerProcess(kubeconfig, emulator.metrics_url_template, args.interval, free_port(),
                                    args.workers, Path(tmp) / "controller.log")
            try:
                rows = measure(ctl, emulator, names, args.ticks, args.burst_tick, args.burst_share, args.interval, log)
            finally:
                ctl.stop()
                log_tail = (Path(tmp) / "controller.log").read_text()[-2000:]
    result = summarize(rows, args.models, args)
    result["controller_log_tail"] = log_tail
    result["scrape_floor"] = floor
    write_report(result, args.out)
    log(f"tick p99 {result['tick_s']['p99']:.2f} s, RSS max {result['rss_mb']['max']:.0f} MB, scale writes per changed "
        f"decision {_ratio_cell(result['changed_ticks']['scale_writes_per_changed_decision'])}; "
        f"bench/results/{args.out}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
