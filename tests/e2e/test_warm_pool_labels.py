"""The warm pool labels its own node on the real API server, as the shipped ServiceAccount, bound by
the shipped RBAC and ValidatingAdmissionPolicy: staged.warmscale.io/<model> follows what is staged;
another node, or any other label, is refused."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import kubernetes
import pytest

from loader.cli import main
from loader.make_checkpoint import CheckpointSpec, make_checkpoint
from loader.warmplan import LabelError, kube_core_api, label_key, label_node
from tests.e2e.conftest import MANIFESTS, create_or_replace, dynamic
from tests.e2e.kustomize import render

pytestmark = pytest.mark.integration
NS, SA = "warmscale-warm-pool", "warmscale-warm-pool"
POLICY_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"}


@pytest.fixture(scope="module")
def warm_pool_rbac(installed):
    admin = dynamic(installed.api_client())
    for obj in render(MANIFESTS / "warm-pool"):
        if obj["kind"] in POLICY_KINDS:
            create_or_replace(admin, obj)
    return installed


@pytest.fixture(scope="module")
def nodes(warm_pool_rbac) -> list[str]:
    return warm_pool_rbac.add_gpu_nodes(2, gpus_per_node=8, prefix=f"wp-{uuid.uuid4().hex[:4]}")


@pytest.fixture(scope="module")
def agent_kubeconfig(warm_pool_rbac, nodes, tmp_path_factory) -> Path:
    """A kubeconfig with the token a warm-pool pod on nodes[0] gets (bound to that pod, so it names the node)."""
    core = kubernetes.client.CoreV1Api(warm_pool_rbac.api_client())
    pod = core.create_namespaced_pod(NS, {
        "metadata": {"name": f"warm-pool-{uuid.uuid4().hex[:6]}"},
        "spec": {"serviceAccountName": SA, "nodeName": nodes[0], "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "warm", "image": "ghcr.io/warmscale/warmscale:0.1.0"}]}})
    request = {"spec": {"audiences": [], "expirationSeconds": 3600,
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                           "uid": pod.metadata.uid}}}
    token = core.create_namespaced_service_account_token(SA, NS, request).status.token
    path = warm_pool_rbac.write_kubeconfig(tmp_path_factory.mktemp("agent") / "kubeconfig", token=token, user=SA)
    _wait_until_policy_enforced(kube_core_api(path), nodes[1])
    return path


def _wait_until_policy_enforced(agent, other_node: str, timeout_s: float = 30.0) -> None:
    """A new ValidatingAdmissionPolicy is enforced once the API server has loaded it: probe with a
    server-side dry run (admission runs, nothing is written) until the agent's write to another node is refused."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            agent.patch_node(other_node, {"metadata": {"labels": {label_key("probe"): "true"}}}, dry_run="All")
        except kubernetes.client.ApiException as exc:
            if exc.status in (403, 422) and "own pod" in exc.body:
                return
            raise
        time.sleep(0.5)
    raise TimeoutError(f"the warm-pool ValidatingAdmissionPolicy was not enforced within {timeout_s} s")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ckpts")
    for i, name in enumerate(("llama-3-8b", "meta-llama/Llama-3.1-8B")):
        make_checkpoint(root / name, CheckpointSpec(total_bytes=300_000, hidden=64, seed=i))
    return {name: str(root / name) for name in ("llama-3-8b", "meta-llama/Llama-3.1-8B")}


def labels(cluster, node: str) -> dict[str, str]:
    return kubernetes.client.CoreV1Api(cluster.api_client()).read_node(node).metadata.labels or {}


def follow(capsys, tmp_path: Path, kubeconfig: Path, node: str, checkpoints: dict[str, str], planned: list[str]):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "nodes": {node: planned},
                                "models": {m: {"location": loc, "bytes": 1} for m, loc in checkpoints.items()}}))
    code = main(["warm-plan", "--plan", str(plan), "--node", node, "--cache-dir", str(tmp_path / "cache"),
                 "--label-node", "--kubeconfig", str(kubeconfig), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_node_labels_follow_what_is_staged(warm_pool_rbac, nodes, agent_kubeconfig, checkpoints, tmp_path, capsys):
    small, long_name = "llama-3-8b", "meta-llama/Llama-3.1-8B"
    code, out = follow(capsys, tmp_path, agent_kubeconfig, nodes[0], checkpoints, [small, long_name])
    assert code == 0, out
    got = labels(warm_pool_rbac, nodes[0])
    assert got[label_key(small)] == "true" and got[label_key(long_name)] == "true"
    assert got["nvidia.com/gpu.present"] == "true"                      # other labels untouched

    code, out = follow(capsys, tmp_path, agent_kubeconfig, nodes[0], checkpoints, [long_name])
    assert code == 0 and out["evicted"] == [checkpoints[small]], out
    got = labels(warm_pool_rbac, nodes[0])
    assert label_key(small) not in got and got[label_key(long_name)] == "true"
    assert not any(k.startswith("staged.warmscale.io/") for k in labels(warm_pool_rbac, nodes[1]))


def test_the_agent_may_not_label_another_node_or_other_labels(warm_pool_rbac, nodes, agent_kubeconfig):
    core = kube_core_api(agent_kubeconfig)
    with pytest.raises(LabelError, match=nodes[1]):
        label_node(core, nodes[1], ["llama-3-8b"])
    with pytest.raises(kubernetes.client.ApiException) as err:
        core.patch_node(nodes[0], {"metadata": {"labels": {"nvidia.com/gpu.present": "false"}}})
    assert err.value.status in (403, 422) and "staged.warmscale.io" in err.value.body
    with pytest.raises(kubernetes.client.ApiException) as err:
        core.list_node()
    assert err.value.status == 403                                        # get and patch only
