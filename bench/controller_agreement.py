#!/usr/bin/env python
"""Sim/live agreement: one trace slice through the simulator and through a live loop on the test
ground's real control plane, replica timelines compared tick by tick. A measurement, not a test.

    .venv/bin/python bench/controller_agreement.py                        # 15 min of azure-conv, real time
    .venv/bin/python bench/controller_agreement.py --loops reference --slice 20m:23m   # a short try

Live side: kube-apiserver + controller-manager + scheduler + kwok fake GPU nodes (tests/ground).
Each live fleet is a Deployment whose pods turn Ready after the profile's cold start (kwok's
fake-ready-after annotation); `PodMirror` tells a `FleetEmulator` which pods exist and are Ready;
the emulator runs the simulator's engine model for each Ready pod and replays the trace slice on
the wall clock (real time), serving vLLM's metrics on loopback. Loops, each on its own fleet, all
in the same run:

* controller: warmscale's controller (autoscaler/controller), in process, with the emulator's
  resolver (direct scrapes), reading its ModelAutoscaler;
* reference: a bench-only loop with the same sensor (DirectSensor) and the same policy object
  the controller builds from the spec, writing the Deployment's scale subresource; it isolates
  what the controller adds (scheduling, pod counting, actuation) from sensing differences.

Simulator side: the same slice, the same policy built from the same ModelAutoscaler spec, the
same profile, scrapes at every tick (the live loops scrape at their tick), rates over 60 s.

Compared: at every simulator tick, the Deployment's spec.replicas (what the live loop wrote) against
the simulator's desired replicas. Agreement = share of ticks within +-1. Baseline from the same
run: a fleet that never changes from its initial size, scored against the simulator the same way.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
NAMESPACE = "agreement"
MODEL = "llama"
PROFILE = "h100-llama-3.1-8b"
TOLERANCE = 1
TARGET_SHARE = 0.90


# --------------------------------------------------------------------------- set-up
def load_slice(trace: str, slice_text: str, peak_replicas: float, seed: int, warmup_s: float = 0.0):
    """The scored slice, and the workload both sides replay: the slice with `warmup_s` of the same
    trace before it, at the slice's own scale factor (the scored requests are the same)."""
    from autoscaler.sim.profile import load_profile
    from autoscaler.sim.runner import parse_slice
    from autoscaler.sim.traces import load_workload

    profile = load_profile(PROFILE)
    start_s, end_s = parse_slice(slice_text)
    scored = load_workload(trace, profile=profile, peak_replicas=peak_replicas, start_s=start_s, end_s=end_s,
                           seed=seed)
    if warmup_s <= 0:
        return profile, scored, scored
    if start_s - warmup_s < 0:
        raise ValueError(f"--warmup {warmup_s:g} s reaches before the trace's start (the slice starts at {start_s:g} s)")
    replay = load_workload(trace, profile=profile, factor=scored.scale, start_s=start_s - warmup_s, end_s=end_s,
                           seed=seed)
    return profile, scored, replay


def autoscaler_spec(profile, deployment: str, max_replicas: int) -> dict:
    """The ModelAutoscaler spec both sides use: capacity and cold start from the profile."""
    cap = profile.to_capacity()
    return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "model": MODEL, "selector": {"matchLabels": {"app": deployment}},
            "minReplicas": 1, "maxReplicas": max_replicas,
            "capacity": {"maxNumSeqs": cap.max_num_seqs, "kvCacheTokens": cap.kv_cache_tokens,
                         "prefillTokensPerSecond": cap.prefill_tokens_per_s,
                         "decodeTokensPerSecond": cap.decode_tokens_per_s},
            "coldStart": {"seconds": profile.cold_start.total_s},
            "metrics": {"source": "direct"}}


def make_policy_from_spec(spec: dict, interval_s: float):
    """The policy object the controller builds for `spec` (one definition: autoscaler.controller.spec)."""
    from autoscaler.controller.spec import ModelAutoscalerSpec, policy_kwargs, replica_capacity
    from autoscaler.policy.registry import make_policy

    parsed = ModelAutoscalerSpec.model_validate(spec)
    return make_policy("warmscale", replica_capacity(parsed), **policy_kwargs(parsed, interval_s))


def initial_replicas(workload, profile) -> int:
    """The fleet both sides start with: what the slice's first minute needs (the oracle's own rule)."""
    from autoscaler.sim.oracle import first_minute_need

    return max(1, first_minute_need(workload, profile.to_capacity()))


# --------------------------------------------------------------------------- simulator
class RecordingPolicy:
    """Wraps a policy: records every (observation, decision) the simulator makes."""

    def __init__(self, policy):
        self.policy = policy
        self.name = policy.name
        self.interval_s = policy.interval_s
        self.ticks: list[dict] = []

    def decide(self, obs):
        decision = self.policy.decide(obs)
        self.ticks.append(tick_record(obs, decision))
        return decision

    def __getattr__(self, name):          # snapshot, restore, config: the wrapped policy's
        return getattr(self.policy, name)


def tick_record(obs, decision) -> dict:
    return {"t": obs.time, "desired": int(decision.desired), "current": obs.current, "ready": obs.ready_replicas,
            "reason": str(decision.reason), "waiting": obs.waiting_requests, "running": obs.running_requests,
            "kv": obs.kv_cache_usage, "request_rate": obs.request_rate, "gen_rate": obs.generation_token_rate,
            "ttft_p95": obs.ttft_p95, "detail": decision.detail[:400]}


def scored_ticks(ticks: list[dict], start_s: float) -> list[dict]:
    """The simulator's ticks inside the scored slice (warm-up ticks dropped)."""
    return [t for t in ticks if t["t"] >= start_s]


def run_simulator(workload, profile, spec: dict, interval_s: float, n0: int) -> list[dict]:
    from autoscaler.sim.sensing import SensingConfig
    from autoscaler.sim.simulator import SimConfig, simulate

    policy = RecordingPolicy(make_policy_from_spec(spec, interval_s))
    # as the live loops read: each Ready pod scraped directly at every tick, no router, no misses
    sensing = SensingConfig(mode="direct", router=False, scrape_interval_s=interval_s, lag_s=0.0, jitter_s=0.0,
                            miss_rate=0.0, rate_window_s=60.0)
    config = SimConfig(sensing=sensing, initial_replicas=n0)
    simulate(workload, policy, profile, config)
    return policy.ticks


# --------------------------------------------------------------------------- live
def deployment(name: str, replicas: int, cold_start_s: float) -> dict:
    from tests.ground.kube import GPU_RESOURCE, READY_DELAY_ANNOTATION

    labels = {"app": name}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels,
                                               "annotations": {READY_DELAY_ANNOTATION: f"{cold_start_s:.2f}s"}},
                                  "spec": {"terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest",
                                                           "resources": {"limits": {GPU_RESOURCE: "1"}}}]}}}}


class ScaleRecorder(threading.Thread):
    """Polls a Deployment's spec.replicas (what the loop wrote) and Ready count every `every_s`."""

    def __init__(self, api_client, name: str, every_s: float = 0.5):
        import kubernetes

        super().__init__(name=f"record-{name}", daemon=True)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.deployment = name
        self.every_s = every_s
        self.samples: list[tuple[float, int, int]] = []   # (wall, spec.replicas, ready)
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            with contextlib.suppress(Exception):
                d = self.apps.read_namespaced_deployment(self.deployment, NAMESPACE)
                self.samples.append((time.time(), int(d.spec.replicas), int(d.status.ready_replicas or 0)))

    def at(self, wall: float) -> tuple[int, int] | None:
        """spec.replicas and Ready at `wall` (the newest sample at or before it)."""
        best = None
        for t, replicas, ready in self.samples:
            if t > wall:
                break
            best = (replicas, ready)
        return best


class ReferenceLoop(threading.Thread):
    """Bench-only live loop: pods from the API server, DirectSensor through the emulator, the
    policy the controller would build, the scale subresource written when the decision changes."""

    def __init__(self, api_client, emulator, name: str, spec: dict, interval_s: float):
        import kubernetes

        from autoscaler.metrics.direct import DirectSensor

        super().__init__(name=f"reference-{name}", daemon=True)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.deployment = name
        self.policy = make_policy_from_spec(spec, interval_s)
        self.sensor = DirectSensor(MODEL, emulator.resolver(), rate_window_s=60.0)
        self.interval_s = interval_s
        self.written: int | None = None
        self.ticks: list[dict] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def tick(self) -> None:
        from autoscaler.metrics.resolver import PodRef
        from tests.ground.fleet import pod_ready

        pods = [p for p in self.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={self.deployment}").items
                if p.metadata.deletion_timestamp is None]
        ready = [PodRef(p.metadata.name, NAMESPACE, p.status.pod_ip) for p in pods if pod_ready(p)]
        now = time.time()
        reading = self.sensor.observe(now, ready, loading_replicas=len(pods) - len(ready))
        decision = self.policy.decide(reading.observation)
        self.ticks.append({**tick_record(reading.observation, decision), "missing": list(reading.missing)})
        if self.written is None:
            self.written = int(self.apps.read_namespaced_deployment_scale(self.deployment, NAMESPACE).spec.replicas)
        if decision.desired != self.written:
            self.apps.patch_namespaced_deployment_scale(self.deployment, NAMESPACE,
                                                        {"spec": {"replicas": int(decision.desired)}})
            self.written = int(decision.desired)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as exc:      # an API hiccup is one lost tick, recorded
                self.errors.append(f"{time.time():.1f} {type(exc).__name__}: {exc}")
            next_at += self.interval_s
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        self.sensor.close()


@dataclass
class Fleet:
    name: str
    loop: str
    emulator: object
    mirror: object
    recorder: ScaleRecorder
    runner: object = None
    extra: dict = field(default_factory=dict)


def start_controller(api_client, fleets: list[Fleet], interval_s: float):
    """warmscale's controller in process. One controller serves every 'controller' fleet; a pod is
    resolved to the emulator of its own fleet. Every decision its policies make is recorded (what
    the policy saw and decided), as the reference loop records its own."""
    from autoscaler.controller.loop import Controller, ControllerConfig

    class FleetResolver:
        def metrics_url(self, pod):
            for f in fleets:
                if pod.name.startswith(f.name + "-"):
                    return f.emulator.resolver().metrics_url(pod)
            return None

    class RecordingController(Controller):
        def _model(self, obj):
            model = super()._model(obj)
            if not isinstance(model.policy, RecordingPolicy):
                model.policy = RecordingPolicy(model.policy)
                self.recorded.setdefault(obj["metadata"]["name"], []).append(model.policy)
            return model

        def ticks_of(self, name: str) -> list[dict]:
            return sorted((t for p in self.recorded.get(name, []) for t in p.ticks), key=lambda t: t["t"])

    controller = RecordingController(ControllerConfig(namespace=NAMESPACE, interval_s=interval_s,
                                                      metrics_host="127.0.0.1", metrics_port=0, identity="bench"),
                                     api_client=api_client, resolver=FleetResolver())
    controller.recorded = {}
    controller.start()
    if not controller.wait_until_leader(60):
        raise RuntimeError(f"the controller did not become leader within 60 s: {controller.error_messages()[-5:]}")
    return controller


def create_autoscaler(api_client, name: str, spec: dict) -> None:
    import kubernetes

    from autoscaler.controller.crd import GROUP, KIND, PLURAL, VERSION

    kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec})


def install_crd(api_client) -> None:
    """The shipped CRDs (ModelAutoscaler, and ScalingOverride, which the controller caches too)."""
    from tests.e2e.conftest import MANIFESTS, create_or_replace, dynamic, wait_crds_established
    from tests.e2e.kustomize import render

    crds = [o for o in render(MANIFESTS) if o["kind"] == "CustomResourceDefinition"]
    admin = dynamic(api_client)
    for obj in crds:
        create_or_replace(admin, obj)
    wait_crds_established(api_client, [o["metadata"]["name"] for o in crds])


def run_live(workload, profile, loops: list[str], repeats: int, interval_s: float, n0: int, max_replicas: int,
             log) -> dict:
    import kubernetes

    from autoscaler.sim.emulator import FleetEmulator
    from tests.ground.fleet import PodMirror
    from tests.ground.kube import start_cluster

    cold = profile.cold_start.total_s
    gpus_needed = repeats * len(loops) * max_replicas
    with tempfile.TemporaryDirectory(prefix="agreement-") as tmp, start_cluster(Path(tmp)) as cluster, \
            contextlib.ExitStack() as stack:
        cluster.add_gpu_nodes(-(-gpus_needed // 8), gpus_per_node=8)
        client = cluster.api_client()
        kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}})
        apps = kubernetes.client.AppsV1Api(client)
        fleets: list[Fleet] = []
        for loop in loops:
            for r in range(repeats):
                name = f"{MODEL}-{loop}-{r}"
                apps.create_namespaced_deployment(NAMESPACE, deployment(name, n0, cold))
                em = stack.enter_context(FleetEmulator(profile, namespace=NAMESPACE))
                mirror = stack.enter_context(PodMirror(client, em, NAMESPACE, f"app={name}", MODEL))
                fleets.append(Fleet(name, loop, em, mirror, ScaleRecorder(client, name)))
        log(f"waiting for {len(fleets)} fleets of {n0} pods to turn Ready (cold start {cold:.1f} s)")
        for f in fleets:
            f.mirror.wait_for(lambda p: len(p) == n0 and all(p.values()), timeout_s=cold + 120)
        if "controller" in loops:
            install_crd(client)
            for f in fleets:
                if f.loop == "controller":
                    create_autoscaler(client, f.name, autoscaler_spec(profile, f.name, max_replicas))
        # the clock starts: every emulator at the slice's start, the same wall instant
        wall0 = time.time()
        for f in fleets:
            f.emulator.rebase(workload.start_s)
            f.emulator.replay(MODEL, workload.arrival, workload.prompt, workload.output)   # the fleet's model name
            f.recorder.start()
        controller = start_controller(client, [f for f in fleets if f.loop == "controller"], interval_s) \
            if "controller" in loops else None
        for f in fleets:
            if f.loop == "reference":
                f.runner = ReferenceLoop(client, f.emulator, f.name,
                                         autoscaler_spec(profile, f.name, max_replicas), interval_s)
                f.runner.start()
        log(f"replaying {workload.duration_s / 60:.1f} min in real time")
        end = wall0 + workload.duration_s
        while time.time() < end:
            time.sleep(min(30.0, max(0.0, end - time.time())))
            log(f"  {100 * (time.time() - wall0) / workload.duration_s:5.1f} %  " + "  ".join(
                f"{f.name}={f.recorder.samples[-1][1] if f.recorder.samples else '?'}" for f in fleets))
        for f in fleets:
            f.recorder.stop_event.set()
            if f.runner is not None:
                f.runner.stop_event.set()
        if controller is not None:
            for f in fleets:
                if f.loop == "controller":
                    f.extra = {"ticks": controller.ticks_of(f.name), "errors": controller.error_messages(),
                               "status": read_status(client, f.name), "controller_ticks": controller.ticks}
            controller.stop()
        return {"wall0": wall0, "fleets": [{
            "name": f.name, "loop": f.loop, "samples": f.recorder.samples,
            "ticks": f.runner.ticks if f.runner is not None else f.extra.get("ticks", []),
            "errors": f.runner.errors if f.runner is not None else f.extra.get("errors", []),
            "status": f.extra.get("status"), "controller_ticks": f.extra.get("controller_ticks"),
            "arrivals": f.emulator.arrivals(MODEL), "mirror_error": f.mirror.error} for f in fleets]}


def read_status(api_client, name: str) -> dict | None:
    """The ModelAutoscaler's status at the end (conditions, recent decisions), for the report."""
    import kubernetes

    from autoscaler.controller.crd import GROUP, PLURAL, VERSION

    with contextlib.suppress(Exception):
        obj = kubernetes.client.CustomObjectsApi(api_client).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                                                           PLURAL, name)
        status = dict(obj.get("status") or {})
        status.pop("policyState", None)
        return status
    return None


# --------------------------------------------------------------------------- comparison
def compare(sim_ticks: list[dict], live_at, t0: float, wall0: float) -> dict:
    """Score a live replica timeline (`live_at(wall) -> replicas or None`) against the simulator's ticks."""
    diffs, rows = [], []
    for tick in sim_ticks:
        live = live_at(wall0 + (tick["t"] - t0))
        if live is None:
            continue
        diffs.append(live - tick["desired"])
        rows.append((tick["t"] - t0, tick["desired"], live))
    within = sum(abs(d) <= TOLERANCE for d in diffs)
    return {"ticks": len(diffs), "within_1": within / len(diffs) if diffs else None,
            "exact": sum(d == 0 for d in diffs) / len(diffs) if diffs else None,
            "mean_abs_diff": statistics.fmean(abs(d) for d in diffs) if diffs else None,
            "live_minus_sim_mean": statistics.fmean(diffs) if diffs else None,
            "disagreements": disagreement_spans(rows)}


def disagreement_spans(rows: list[tuple[float, int, int]]) -> list[dict]:
    """Runs of consecutive ticks where |live - sim| > TOLERANCE."""
    spans, cur = [], None
    for t, sim, live in rows:
        off = abs(live - sim) > TOLERANCE
        if off and cur is None:
            cur = {"from_s": t, "to_s": t, "sim": [sim], "live": [live]}
        elif off:
            cur["to_s"] = t
            cur["sim"].append(sim)
            cur["live"].append(live)
        elif cur is not None:
            spans.append(cur)
            cur = None
    if cur is not None:
        spans.append(cur)
    return [{"from_s": s["from_s"], "to_s": s["to_s"], "sim_range": [min(s["sim"]), max(s["sim"])],
             "live_range": [min(s["live"]), max(s["live"])], "ticks": len(s["sim"])} for s in spans]


def explain_span(span: dict, sim_ticks: list[dict], live_ticks: list[dict], t0: float, wall0: float) -> dict:
    """What each side saw at the start of a disagreement: reasons and signals, sim vs live."""
    def near(ticks, key, at):
        best = None
        for tick in ticks:
            if key(tick) <= at + 1e-6:
                best = tick
        return best

    at = span["from_s"]
    sim = near(sim_ticks, lambda x: x["t"] - t0, at)
    live = near(live_ticks, lambda x: x["t"] - wall0, at) if live_ticks else None
    keys = ("desired", "current", "ready", "reason", "waiting", "running", "kv", "request_rate", "gen_rate", "ttft_p95")
    return {"at_s": at, "sim": {k: sim.get(k) for k in keys} if sim else None,
            "live": {k: live.get(k) for k in keys} if live else None}


def summarize(sim_ticks: list[dict], live: dict, t0: float, n0: int) -> dict:
    wall0 = live["wall0"]
    per_fleet = []
    for f in live["fleets"]:
        samples = f["samples"]

        def at(wall, samples=samples):
            best = None
            for t, replicas, _ready in samples:
                if t > wall:
                    break
                best = replicas
            return best

        score = compare(sim_ticks, at, t0, wall0)
        score["why"] = [explain_span(s, sim_ticks, f["ticks"], t0, wall0) for s in score["disagreements"][:10]]
        per_fleet.append({"name": f["name"], "loop": f["loop"], **score, "arrivals": f["arrivals"],
                          "loop_errors": len(f["errors"]), "first_errors": f["errors"][:3],
                          "mirror_error": f["mirror_error"], "live_ticks": len(f["ticks"]),
                          "live_reasons": _count(t["reason"] for t in f["ticks"]),
                          "conditions": [f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message', '')[:160]})"
                                         for c in (f.get("status") or {}).get("conditions") or []],
                          "max_replicas": max((s[1] for s in samples), default=None)})
    baseline = compare(sim_ticks, lambda wall: n0, t0, wall0)
    return {"fleets": per_fleet, "static_baseline": {k: baseline[k] for k in ("ticks", "within_1", "exact",
                                                                             "mean_abs_diff")}}


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def by_loop(fleets: list[dict]) -> dict:
    out = {}
    for loop in sorted({f["loop"] for f in fleets}):
        shares = [f["within_1"] for f in fleets if f["loop"] == loop and f["within_1"] is not None]
        if shares:
            out[loop] = {"runs": len(shares), "median_within_1": statistics.median(shares),
                         "min": min(shares), "max": max(shares)}
    return out


# --------------------------------------------------------------------------- report
def machine_load() -> str:
    import os

    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores at the end of the run"


def write_report(result: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    s = result["setup"]
    lines = [f"# Sim/live agreement ({stem})", "",
             f"Made by `bench/controller_agreement.py {' '.join(s['argv'])}` on {s['date']}; {s['machine']}.", "",
             f"Trace {s['trace']} slice {s['slice']} ({s['duration_min']:.1f} min, {s['requests']:,} requests, "
             f"factor {s['factor']:.3g}: its busiest minute needs {s['peak_replicas']:g} replicas), replayed in real "
             f"time (no compression); profile {PROFILE}, cold start {s['cold_start_s']:.1f} s; policy warmscale built "
             f"from the same ModelAutoscaler spec on both sides, tick every {s['interval_s']:g} s, "
             f"{s['initial_replicas']} replicas at the start, max {s['max_replicas']}. Both sides first replay the "
             f"{s.get('warmup_s', 0):g} s of the trace before the slice, unscored (warm-up: a full rate window and "
             f"the policy's stable window, so that neither side's start-up is scored); times below are from the "
             f"slice's start.", "",
             f"Agreement = share of the simulator's ticks at which the live Deployment's spec.replicas is within "
             f"+-{TOLERANCE} of the simulator's desired replicas (target >= {TARGET_SHARE:.0%}). Baseline (same run): a "
             f"fleet that stays at its initial size.", "",
             "| loop | runs | within +-1 (median) | range | x baseline |", "|---|---|---|---|---|"]
    base = result["static_baseline"]["within_1"]
    for loop, v in result["by_loop"].items():
        ratio = v["median_within_1"] / base if base else None
        cell = "- (baseline 0 %)" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {loop} | {v['runs']} | {v['median_within_1']:.1%} | {v['min']:.1%}-{v['max']:.1%} | {cell} |")
    lines.append(f"| static baseline | 1 | {base:.1%} | - | 1.00 |")
    if base is not None and base >= TARGET_SHARE:
        lines += ["", f"A fleet that never changes scores {base:.0%} here too: on this slice the simulator barely moves "
                      f"from the initial fleet, so agreement cannot tell the controller from doing nothing."]
    lines += ["", "Per fleet:", "", "| fleet | within +-1 | exact | mean abs diff | live - sim (mean) | max replicas | "
              "disagreement spans |", "|---|---|---|---|---|---|---|"]
    for f in result["fleets"]:
        lines.append(f"| {f['name']} | {f['within_1']:.1%} | {f['exact']:.1%} | {f['mean_abs_diff']:.2f} | "
                     f"{f['live_minus_sim_mean']:+.2f} | {f['max_replicas']} | {len(f['disagreements'])} |")
    lines += ["", "What each live loop decided (its policy's reasons over its ticks), errors, and the controller's "
              "conditions at the end:", ""]
    for f in result["fleets"]:
        reasons = ", ".join(f"{k} {v}" for k, v in f.get("live_reasons", {}).items()) or "-"
        lines.append(f"- {f['name']}: {f.get('live_ticks', 0)} ticks: {reasons}; {f['loop_errors']} errors"
                     + (f" (first: {'; '.join(f['first_errors'])})" if f.get("first_errors") else ""))
        for c in f.get("conditions") or []:
            lines.append(f"  - {c}")
    lines += ["", "Where they differ (first tick of each span beyond +-1; what each side saw):", ""]
    for f in result["fleets"]:
        for why, span in zip(f["why"], f["disagreements"]):
            sim, live = why["sim"] or {}, why["live"] or {}
            lines.append(f"- {f['name']} {span['from_s']:.0f}-{span['to_s']:.0f} s: sim {span['sim_range']} "
                         f"({sim.get('reason')}, rate {_num(sim.get('request_rate'))}, waiting {_num(sim.get('waiting'))}) "
                         f"vs live {span['live_range']}" + (f" ({live.get('reason')}, rate {_num(live.get('request_rate'))}, "
                                                            f"waiting {_num(live.get('waiting'))})" if live else ""))
    lines += ["", *result.get("notes", [])]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def _num(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="exit codes: 0 done (whatever the agreement), 2 bad arguments, "
                                            "3 the test ground failed to start")
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--slice", default="20m:35m", help="START:END on the trace's clock (default: 15 minutes)")
    parser.add_argument("--warmup", type=float, default=480.0,
                        help="seconds of the trace before the slice that both sides replay unscored (default 480: "
                             "the 60 s rate window, the 300 s stable window and the scale-down steps after it, "
                             "which a cold start's transient lasts in the simulator; 0 scores from a cold start)")
    parser.add_argument("--peak-replicas", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=5.0, help="tick interval in seconds (both sides)")
    parser.add_argument("--loops", default="controller,reference", help="comma-separated: controller, reference")
    parser.add_argument("--repeats", type=int, default=2, help="fleets per loop, run side by side")
    parser.add_argument("--max-replicas", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="controller_agreement", help="results file stem under bench/results")
    args = parser.parse_args(argv)
    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    bad = [x for x in loops if x not in ("controller", "reference")]
    if bad or not loops or args.repeats < 1 or args.interval <= 0:
        print(f"error: --loops must name controller and/or reference (got {args.loops!r}), --repeats >= 1 "
              f"(got {args.repeats}), --interval > 0 (got {args.interval})", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    try:
        profile, scored, workload = load_slice(args.trace, args.slice, args.peak_replicas, args.seed, args.warmup)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warmup_s = scored.start_s - workload.start_s
    n0 = initial_replicas(workload, profile)
    spec = autoscaler_spec(profile, "sim", args.max_replicas)
    log(f"{args.trace} {args.slice}: {len(scored):,} requests over {scored.duration_s / 60:.1f} min, after "
        f"{warmup_s:g} s of warm-up (not scored); initial fleet {n0}")
    t_sim = time.perf_counter()
    sim_all = run_simulator(workload, profile, spec, args.interval, n0)
    sim_ticks = scored_ticks(sim_all, scored.start_s)
    log(f"simulator: {len(sim_all)} ticks ({len(sim_ticks)} scored) in {time.perf_counter() - t_sim:.1f} s; desired "
        f"{min(t['desired'] for t in sim_ticks)}-{max(t['desired'] for t in sim_ticks)} in the scored slice")
    from tests.ground.procs import PartFailedToStart

    try:
        live = run_live(workload, profile, loops, args.repeats, args.interval, n0, args.max_replicas, log)
    except PartFailedToStart as exc:
        print(f"error: the test ground did not start: {exc}", file=sys.stderr)
        return 3
    # times relative to the scored slice's start on both sides (the live replay began warmup_s earlier)
    summary = summarize(sim_ticks, {**live, "wall0": live["wall0"] + warmup_s}, scored.start_s, n0)
    result = {
        "setup": {"argv": sys.argv[1:] if argv is None else argv, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "machine": machine_load(), "trace": args.trace, "slice": args.slice, "warmup_s": warmup_s,
                  "duration_min": scored.duration_s / 60, "requests": len(scored), "factor": scored.scale,
                  "peak_replicas": args.peak_replicas, "cold_start_s": profile.cold_start.total_s,
                  "interval_s": args.interval, "initial_replicas": n0, "max_replicas": args.max_replicas,
                  "loops": loops, "repeats": args.repeats},
        "by_loop": by_loop(summary["fleets"]), **summary,
        "simulator": {"ticks": sim_all}, "live": live,
        "notes": NOTES,
    }
    write_report(result, args.out)
    for loop, v in result["by_loop"].items():
        base = summary["static_baseline"]["within_1"]
        log(f"{loop}: within +-1 on {v['median_within_1']:.1%} of ticks (median of {v['runs']}, "
            f"{v['min']:.1%}-{v['max']:.1%}); static baseline {base:.1%}"
            + (f"; ratio {v['median_within_1'] / base:.2f}" if base else ""))
    log(f"wrote {RESULTS / (args.out + '.md')}")
    return 0


NOTES = [
    "Why a warm-up: from a cold start the two sides' rates differ for the first rate window. The simulator's "
    "direct sensing computes Prometheus' rate() (extrapolated over the full 60 s window), so with an empty history "
    "its request rate ramps from ~0 to the true level over the first minute; warmscale's trend signal reads that "
    "ramp as rising demand and orders replicas, which the 300 s stable window then keeps. The live sensor "
    "(autoscaler/metrics/observe.py) divides by the span its samples cover and reads the true rate from its second "
    "scrape, so it sees no ramp. Scored from a cold start (--warmup 0), a 5-minute slice lies inside that transient "
    "(the earlier 15% of the controller).",
    "The reference loop (bench-only) ticks from the replay's first second, on engines that have served nothing: "
    "the finished-request rate then climbs from 0 to the demand's over ~15 s (completions lag arrivals), its trend "
    "signal reads the climb as demand and orders maxReplicas, and the stepped scale-down from there outlasts the "
    "warm-up. The controller's first rate comes one tick later, past the climb. The reference isolates the "
    "controller's own part only after a warm-up it cannot get from a cold start; the controller's own decisions "
    "(what its policy saw and decided, recorded in process) are reported above.",
    "Known differences between the two sides, by construction:",
    "- request_rate: the simulator counts arrivals at its gateway; live, it is the rate of vllm:request_success_total "
    "(finished requests), which lags arrivals by the queueing and generation time and is capped by capacity.",
    "- waiting: the simulator adds requests its gateway holds (no Ready replica) to the engines' queues; live, "
    "the engines' queues only (held requests are the router's warmscale_router_held_requests).",
    "- Pod readiness: live pods turn Ready after kwok's annotated delay plus scheduling and watch latency; the "
    "simulator uses the profile's cold start exactly.",
    "- Ticks: the simulator ticks on a virtual clock; live loops tick on the wall clock, with scrape and API latency.",
]


if __name__ == "__main__":
    sys.exit(main())
