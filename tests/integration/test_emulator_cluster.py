"""Emulated engines follow a real Deployment on the test ground's control plane: pods that turn
Ready get vLLM series on loopback, scaled-away pods lose them, and the direct sensor reaches every
pod through the emulator's resolver without dialling a pod IP."""
from __future__ import annotations

import time
import uuid

import httpx
import kubernetes
import pytest

from autoscaler.metrics.direct import DirectSensor
from autoscaler.metrics.resolver import PodRef
from autoscaler.metrics.scrape import parse_metrics
from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.ground.fleet import PodMirror, pod_ready
from tests.ground.kube import GPU_RESOURCE, READY_DELAY_ANNOTATION

pytestmark = pytest.mark.integration

MODEL = "tiny"


def _deployment(name: str, replicas: int, ready_after: str) -> dict:
    labels = {"app": name}
    return {"metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {READY_DELAY_ANNOTATION: ready_after}},
                                  "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest",
                                                           "resources": {"limits": {GPU_RESOURCE: "1"}}}]}}}}


def _series_pods(emulator: FleetEmulator) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{emulator.url}/metrics").text
    return {s.labels["pod"] for f in text_string_to_metric_families(text) for s in f.samples if "pod" in s.labels}


def test_emulated_pods_follow_the_deployment_and_are_scraped_on_loopback(k8s_cluster):
    k8s_cluster.add_gpu_nodes(1, gpus_per_node=8, prefix=f"emu-{uuid.uuid4().hex[:4]}")
    client = k8s_cluster.api_client()
    apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
    name = f"emu-{uuid.uuid4().hex[:6]}"
    apps.create_namespaced_deployment("default", _deployment(name, replicas=2, ready_after="3s"))
    with FleetEmulator(load_profile("tiny-llama-cpu")) as em, \
            PodMirror(client, em, "default", f"app={name}", MODEL) as mirror:
        pods = mirror.wait_for(lambda p: len(p) == 2 and all(p.values()), timeout_s=60)
        assert _series_pods(em) == set(pods)

        apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 3}})
        loading = mirror.wait_for(lambda p: len(p) == 3 and sum(p.values()) == 2, timeout_s=30)
        new_pod = next(n for n, ready in loading.items() if not ready)
        assert new_pod not in _series_pods(em), "a pod still loading weights has no engine yet"
        mirror.wait_for(lambda p: len(p) == 3 and all(p.values()), timeout_s=30)
        assert new_pod in _series_pods(em)

        # direct scrape of the Ready pods through the emulator's resolver, with their real 10.x IPs
        listed = core.list_namespaced_pod("default", label_selector=f"app={name}").items
        refs = [PodRef(p.metadata.name, "default", p.status.pod_ip) for p in listed if pod_ready(p)]
        assert all(r.ip and r.ip.startswith("10.244.") for r in refs)
        sensor = DirectSensor(MODEL, em.resolver(), rate_window_s=10)
        try:
            for _ in range(30):
                em.submit(MODEL, 1000, 300)
            time.sleep(0.3)
            reading = sensor.observe(time.time(), refs, loading_replicas=0)
        finally:
            sensor.close()
        assert reading.complete or reading.missing == ("request_rate", "prompt_token_rate",
                                                       "generation_token_rate", "ttft_p95")
        assert reading.observation.running_requests == 12 and reading.observation.waiting_requests == 18

        apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 1}})
        mirror.wait_for(lambda p: len(p) == 1, timeout_s=30)
        remaining = set(mirror.pods())
        deadline = time.monotonic() + 5
        while _series_pods(em) != remaining and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _series_pods(em) == remaining
        s = parse_metrics(httpx.get(em.router_metrics_url).text, 0.0, MODEL)
        assert s.arrivals == 30
    apps.delete_namespaced_deployment(name, "default")
