"""Each part of the test ground is real: these tests fail if a part is faked or misconfigured."""
from __future__ import annotations

import os
import time
import uuid

import kubernetes
import pytest

from tests.ground.kube import GPU_RESOURCE, READY_DELAY_ANNOTATION
from tests.ground.load import burst

pytestmark = pytest.mark.integration


def _deployment(name: str, replicas: int, ready_after: str, gpus: int = 1, nodes: list[str] | None = None) -> dict:
    labels = {"app": name}
    # Other tests add GPU nodes to the same cluster: keep these pods on this test's own nodes.
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": list(nodes)}]}]}}} if nodes else None
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {READY_DELAY_ANNOTATION: ready_after}},
                "spec": {"affinity": affinity,
                         "containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest",
                                         "resources": {"limits": {GPU_RESOURCE: str(gpus)} if gpus else {}}}]},
            },
        },
    }


def test_gpu_deployment_is_scheduled_and_turns_ready_after_the_annotated_delay(k8s_cluster):
    nodes = k8s_cluster.add_gpu_nodes(2, gpus_per_node=2, prefix=f"gpu-{uuid.uuid4().hex[:4]}")
    client = k8s_cluster.api_client()
    apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    created = time.monotonic()
    apps.create_namespaced_deployment("default", _deployment(name, replicas=3, ready_after="4s", nodes=nodes))

    running_at = ready_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ready_at is None:
        pods = core.list_namespaced_pod("default", label_selector=f"app={name}").items
        running = [p for p in pods if p.status.phase == "Running"]
        if len(running) == 3 and running_at is None:
            running_at = time.monotonic()
            assert all(p.spec.node_name in nodes for p in running)
            assert not any(c.type == "Ready" and c.status == "True" for p in running for c in p.status.conditions)
        if apps.read_namespaced_deployment_status(name, "default").status.ready_replicas == 3:
            ready_at = time.monotonic()
        time.sleep(0.2)
    assert running_at is not None, "pods never turned Running"
    assert ready_at is not None, "pods never turned Ready"
    assert ready_at - created >= 4.0, "Ready came before the annotated weight-loading delay"
    # Four GPUs in total, one per pod: a fourth and fifth replica cannot all fit.
    apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 5}})
    time.sleep(3)
    pods = core.list_namespaced_pod("default", label_selector=f"app={name}").items
    assert sum(p.status.phase == "Pending" for p in pods) == 1
    # kwok completes deletions: scaled-down pods disappear instead of hanging in Terminating.
    apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 0}})
    deadline = time.monotonic() + 30
    while core.list_namespaced_pod("default", label_selector=f"app={name}").items and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not core.list_namespaced_pod("default", label_selector=f"app={name}").items


def test_stale_scale_write_gets_409(k8s_cluster):
    client = k8s_cluster.api_client()
    apps = kubernetes.client.AppsV1Api(client)
    name = f"stale-{uuid.uuid4().hex[:6]}"
    apps.create_namespaced_deployment("default", _deployment(name, replicas=0, ready_after="0s", gpus=0))
    def scale_to(replicas: int, resource_version: str):
        return apps.replace_namespaced_deployment_scale(name, "default", {
            "metadata": {"name": name, "namespace": "default", "resourceVersion": resource_version},
            "spec": {"replicas": replicas}})

    # The deployment controller writes status right after creation; retry until one write lands.
    for _ in range(20):
        stale_version = apps.read_namespaced_deployment_scale(name, "default").metadata.resource_version
        try:
            scale_to(1, stale_version)
            break
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            time.sleep(0.2)
    else:
        pytest.fail("could not write the scale subresource once with a fresh resourceVersion")
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        scale_to(2, stale_version)
    assert conflict.value.status == 409
    assert apps.read_namespaced_deployment_scale(name, "default").spec.replicas == 1


def test_service_account_without_binding_gets_403(k8s_cluster):
    sa_client = k8s_cluster.as_service_account("default", f"nobody-{uuid.uuid4().hex[:6]}")
    with pytest.raises(kubernetes.client.ApiException) as denied:
        kubernetes.client.AppsV1Api(sa_client).list_namespaced_deployment("default")
    assert denied.value.status == 403


def test_prometheus_scrapes_vllm_and_sees_the_queue_grow_in_a_burst(prometheus, vllm_engine):
    prometheus.add_target(vllm_engine.address, model="tiny")
    prometheus.wait_for_series('vllm:num_requests_waiting{model="tiny"}', timeout_s=30)
    results = []
    import threading

    sender = threading.Thread(target=lambda: results.extend(burst(vllm_engine, n=40, prompt_len=1024, max_tokens=512)))
    sender.start()
    try:
        prometheus.wait_for_series('max_over_time(vllm:num_requests_waiting{model="tiny"}[1m])', timeout_s=120,
                                   predicate=lambda waiting: waiting > 0)
        kv = prometheus.query('max_over_time(vllm:kv_cache_usage_perc{model="tiny"}[1m])')
        assert kv and float(kv[0]["value"][1]) > 0.0
    finally:
        sender.join(timeout=300)
    assert len(results) == 40 and all(r.error is None for r in results)
    assert all(r.output_tokens == 512 for r in results)


def test_ranged_get_returns_the_exact_bytes(s3_server):
    client = s3_server.client()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    client.put_object(Bucket=s3_server.bucket, Key="blob.bin", Body=payload)
    start, end = 1_048_571, 2_500_000
    response = client.get_object(Bucket=s3_server.bucket, Key="blob.bin", Range=f"bytes={start}-{end}")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert response["Body"].read() == payload[start:end + 1]
