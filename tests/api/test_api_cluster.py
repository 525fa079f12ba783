"""The API served beside the real controller on the test ground's control plane: TokenReview and
SubjectAccessReview decide with the shipped ClusterRoles; an operator's override moves the
Deployment within one tick, holds across a controller restart and a leader change, and stops on time."""
from __future__ import annotations

import contextlib
import time
import uuid
from datetime import datetime

import httpx
import kubernetes
import pytest

from autoscaler.overrides.janitor import JANITOR
from autoscaler.overrides.model import GROUP, PLURAL, VERSION
from tests.api.cluster import (INTERVAL_S, ApiGround, bound_account, engine_deployment, install_shipped,
                               model_autoscaler, token_of, wait_for)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ground(k8s_cluster) -> ApiGround:
    install_shipped(k8s_cluster)
    k8s_cluster.add_gpu_nodes(1, prefix=f"api-{uuid.uuid4().hex[:4]}")
    admin = k8s_cluster.api_client()
    namespace = f"api-{uuid.uuid4().hex[:6]}"
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    kubernetes.client.AppsV1Api(admin).create_namespaced_deployment(namespace, engine_deployment("llama-engine", 2))
    custom = kubernetes.client.CustomObjectsApi(admin)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelautoscalers",
                                           model_autoscaler("llama", "llama-engine", 1, 6))
    # advisory: decides and writes status, never scales, so the policy keeps holding 2 and a pin stays
    # distinguishable from it for as long as it is in force
    kubernetes.client.AppsV1Api(admin).create_namespaced_deployment(namespace, engine_deployment("qwen-engine", 2))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelautoscalers",
                                           model_autoscaler("qwen", "qwen-engine", 1, 6, advisory=True))
    api_identity = bound_account(k8s_cluster, namespace, "warmscale-api", "warmscale-override-api-server",
                                 cluster_wide=True)
    viewer = bound_account(k8s_cluster, namespace, "viewer", "warmscale-override-viewer")
    operator = bound_account(k8s_cluster, namespace, "operator", "warmscale-override-operator")
    return ApiGround(k8s_cluster, namespace, admin, api_identity, token_of(viewer), token_of(operator),
                     f"system:serviceaccount:{namespace}:operator", "llama-engine", "llama")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def overrides_url(api, ground: ApiGround) -> str:
    return f"{api.url}/v1/namespaces/{ground.namespace}/overrides"


def pin(replicas: int, duration: str, name: str) -> dict:
    return {"name": name, "target": "llama", "kind": "pin", "replicas": replicas, "duration": duration,
            "reason": "launch"}


def stored_overrides(ground: ApiGround) -> list[str]:
    objs = kubernetes.client.CustomObjectsApi(ground.admin).list_namespaced_custom_object(
        GROUP, VERSION, ground.namespace, PLURAL)
    return [o["metadata"]["name"] for o in objs["items"]]


def wait_until_serving(api, ground: ApiGround) -> None:
    url = f"{api.url}/v1/namespaces/{ground.namespace}/autoscalers/llama"
    wait_for(lambda: httpx.get(url, headers=bearer(ground.viewer_token)).status_code == 200, 30,
             "the API sees the ModelAutoscaler")


def test_no_token_is_401_a_viewer_mutating_is_403_and_bad_input_is_422(ground):
    with ground.controller() as controller, ground.serving(controller) as api:
        wait_until_serving(api, ground)
        url = overrides_url(api, ground)
        assert httpx.get(f"{api.url}/v1/overrides").status_code == 401
        assert httpx.get(f"{api.url}/v1/overrides", headers=bearer("not-a-real-token")).status_code == 401
        listed = httpx.get(f"{api.url}/v1/overrides", params={"namespace": ground.namespace},
                           headers=bearer(ground.viewer_token))
        assert listed.status_code == 200 and listed.json()["items"] == []
        denied = httpx.post(url, json=pin(3, "10m", "viewer-pin"), headers=bearer(ground.viewer_token))
        assert denied.status_code == 403 and "may not create" in denied.json()["error"]["message"]
        # the viewer's RoleBinding is in this namespace only: the cluster's RBAC decides
        assert httpx.get(f"{api.url}/v1/overrides", headers=bearer(ground.viewer_token)).status_code == 403
        unknown = httpx.post(url, json={**pin(3, "10m", "nope"), "target": "nope"}, headers=bearer(ground.operator_token))
        assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "target"
        outside = httpx.post(url, json=pin(7, "10m", "too-many"), headers=bearer(ground.operator_token))
        assert outside.status_code == 422 and outside.json()["error"]["field"] == "replicas"
        assert stored_overrides(ground) == []


def test_pin_moves_the_deployment_within_one_tick_and_holds_across_restart_and_leader_change(ground):
    with ground.controller() as first, ground.serving(first) as api:
        assert first.wait_until_leader(30)
        wait_until_serving(api, ground)
        wait_for(lambda: ground.status_leader() == first.config.identity, 30, "the first controller writes status")
        before = ground.replicas()
        target = before + 1
        ticks = first.ticks
        created = httpx.post(overrides_url(api, ground), json=pin(target, "10m", "launch-pin"),
                             headers=bearer(ground.operator_token))
        assert created.status_code == 201, created.text
        wait_for(lambda: ground.replicas() == target, 10, f"the Deployment scaled to {target}", interval_s=0.05)
        # the tick running when the override was written may have read the cache before it: one more at most
        assert first.ticks - ticks <= 2
        state = wait_for(lambda: httpx.get(f"{api.url}/v1/namespaces/{ground.namespace}/autoscalers/llama",
                                           headers=bearer(ground.viewer_token)).json().get("active_override"),
                         10, "status names the active override")
        assert state == "launch-pin"
        audit = httpx.get(f"{api.url}/v1/audit", params={"namespace": ground.namespace},
                          headers=bearer(ground.viewer_token)).json()["items"]
        assert [(e["action"], e["actor"], e["current"]["replicas"]) for e in audit] == \
            [("create", ground.operator_user, target)]

    # restart: the controller is gone; two new ones start, one leads and keeps the pin. The policy
    # alone would hold whatever count it finds, so the Deployment is scaled down behind its back: only
    # the pin brings it back.
    with contextlib.ExitStack() as stack:
        second, third = stack.enter_context(ground.controller()), stack.enter_context(ground.controller())
        ids = {second.config.identity: second, third.config.identity: third}
        leader_id = wait_for(lambda: ground.status_leader() in ids and ground.status_leader(), 30,
                             "a restarted controller writes status")
        assert ground.replicas() == target
        ground.scale_behind_its_back(target - 1)
        wait_for(lambda: ground.replicas() == target and ground.last_decision().get("reason") == "override_pin", 30,
                 "the restarted controller restores the pinned count", describe=ground.last_decision)
        # leader change: the leader goes; the standby takes the Lease and keeps the pin
        ids.pop(leader_id).stop()
        standby = next(iter(ids.values()))
        assert standby.wait_until_leader(30)
        wait_for(lambda: ground.status_leader() == standby.config.identity, 20, "the new leader writes status")
        ground.scale_behind_its_back(target - 1)
        wait_for(lambda: ground.replicas() == target and ground.status_leader() == standby.config.identity
                 and ground.last_decision().get("reason") == "override_pin", 30,
                 "the new leader restores the pinned count", describe=ground.last_decision)
        assert ground.last_decision()["explain"]["override"] == "launch-pin"
        with ground.serving(standby) as api:
            deleted = httpx.delete(f"{overrides_url(api, ground)}/launch-pin", headers=bearer(ground.operator_token))
            assert deleted.status_code == 200
            entry = httpx.get(f"{api.url}/v1/audit", params={"namespace": ground.namespace, "limit": 1},
                              headers=bearer(ground.viewer_token)).json()["items"][0]
            assert (entry["action"], entry["previous"]["replicas"]) == ("delete", target)
    assert stored_overrides(ground) == []


def watch_desired(ground: ApiGround, until: float) -> list[tuple[float, int, str]]:
    samples = []
    while time.time() < until:
        decision = ground.last_decision("qwen")
        samples.append((time.time(), decision.get("desired", -1), decision.get("reason", "")))
        time.sleep(0.1)
    return samples


def qwen_pin(replicas: int, duration: str, name: str) -> dict:
    return {**pin(replicas, duration, name), "target": "qwen"}


def test_override_expires_on_time_and_across_a_restart(ground):
    with ground.controller() as controller, ground.serving(controller) as api:
        assert controller.wait_until_leader(30)
        wait_until_serving(api, ground)
        held = wait_for(lambda: ground.last_decision("qwen").get("desired"), 20, "the advisory autoscaler decides")
        created = httpx.post(overrides_url(api, ground), json=qwen_pin(held + 2, "8s", "short-pin"),
                             headers=bearer(ground.operator_token))
        assert created.status_code == 201, created.text
        expires = datetime.fromisoformat(created.json()["override"]["expires_at"]).timestamp()
        samples = watch_desired(ground, expires + 4 * INTERVAL_S)
        pinned = [t for t, desired, reason in samples if reason == "override_pin" and desired == held + 2]
        assert pinned, samples[:5]
        released = [t for t, desired, reason in samples if t > pinned[0] and desired == held]
        assert released, f"the pin still decided {4 * INTERVAL_S:g} s after its expiry: {samples[-3:]}"
        # in force until its expiry, gone within a tick after it (plus one status read)
        assert min(released) >= expires and max(pinned) < expires + 2 * INTERVAL_S
        assert released[0] <= expires + 2 * INTERVAL_S + 0.5, (released[0] - expires, samples[-5:])
        wait_for(lambda: "short-pin" not in stored_overrides(ground), 10, "the janitor removed the expired pin")
        audit = httpx.get(f"{api.url}/v1/audit", params={"namespace": ground.namespace, "override": "short-pin"},
                          headers=bearer(ground.viewer_token)).json()["items"]
        assert [(e["action"], e["actor"]) for e in audit] == [("expire", JANITOR), ("create", ground.operator_user)]

        # the next pin expires while no controller runs
        created = httpx.post(overrides_url(api, ground), json=qwen_pin(held + 3, "6s", "while-down"),
                             headers=bearer(ground.operator_token))
        assert created.status_code == 201, created.text
        expires = datetime.fromisoformat(created.json()["override"]["expires_at"]).timestamp()
        wait_for(lambda: ground.last_decision("qwen").get("desired") == held + 3, 10, "the second pin decides")
    time.sleep(max(0.0, expires - time.time()) + 0.5)
    assert "while-down" in stored_overrides(ground)
    with ground.controller() as restarted:
        assert restarted.wait_until_leader(30)
        wait_for(lambda: ground.status_leader("qwen") == restarted.config.identity, 20,
                 "the restarted controller writes status")
        decision = ground.last_decision("qwen")
        assert (decision["desired"], decision["explain"].get("override")) == (held, None)


def test_warmscale_controller_command_serves_the_api_on_its_port(ground, tmp_path):
    """`warmscale controller --api-port` serves the same API beside the control loop, and stops cleanly."""
    import re
    import signal
    import subprocess
    import sys

    kubeconfig = ground.cluster.write_kubeconfig(tmp_path / "admin.kubeconfig")
    proc = subprocess.Popen([sys.executable, "-m", "autoscaler.controller", "--kubeconfig", str(kubeconfig),
                             "--namespace", ground.namespace, "--lease-namespace", ground.namespace,
                             "--lease-name", "cli-api", "--dry-run", "--metrics-host", "127.0.0.1",
                             "--metrics-port", "0", "--api-host", "127.0.0.1", "--api-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while (port := re.search(r"API on port (\d+)", lines[-1] if lines else "")) is None:
            line = proc.stdout.readline()
            assert line, "the controller exited before serving the API:\n" + "".join(lines)
            lines.append(line)
        url = f"http://127.0.0.1:{port.group(1)}/v1/namespaces/{ground.namespace}/autoscalers/llama"
        assert httpx.get(url).status_code == 401
        wait_for(lambda: httpx.get(url, headers=bearer(ground.viewer_token)).status_code == 200, 30,
                 "the command's API sees the ModelAutoscaler")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(90)    # output past the banner is not read: the logs of 90 s fit the pipe
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
