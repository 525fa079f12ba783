"""Two `warmscale controller` processes share one Lease: kill the leader (SIGKILL, no hand-over)
right after its first scale write, and the standby takes over and acts within 15 s; the scale
writes form one unbroken chain (no write repeated, none lost), read from the Events the controllers
post and from the API server's own audit log."""
from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import kubernetes
import pytest

from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.e2e.conftest import (CONTROLLER_NS, CONTROLLER_SA, controller_client, create_ma, engine_deployment, read_ma, wait_for)
from tests.e2e.test_controller import _flood, _ma, _replicas
from tests.ground.fleet import PodMirror

pytestmark = pytest.mark.integration

SCALE_EVENT = re.compile(r": (\d+) -> (\d+) replicas")


@contextlib.contextmanager
def _controller_process(kubeconfig, namespace: str, identity: str, template: str, logs) -> Iterator[subprocess.Popen]:
    log = open(logs / f"{identity}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "autoscaler.controller", "--kubeconfig", str(kubeconfig),
                             "--namespace", namespace, "--interval", "1", "--lease-seconds", "4",
                             "--lease-namespace", CONTROLLER_NS, "--lease-name", f"lease-{namespace}",
                             "--identity", identity, "--metrics-host", "127.0.0.1", "--metrics-port", "0",
                             "--metrics-url-template", template], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _holder(cluster, namespace: str) -> str | None:
    try:
        lease = kubernetes.client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease(
            f"lease-{namespace}", CONTROLLER_NS)
    except kubernetes.client.ApiException:
        return None
    return lease.spec.holder_identity


def _scale_events(cluster, namespace: str) -> list:
    events = kubernetes.client.CoreV1Api(cluster.api_client()).list_namespaced_event(namespace).items
    return sorted((e for e in events if e.reason in ("ScaledUp", "ScaledDown")),
                  key=lambda e: (e.first_timestamp, e.metadata.resource_version and int(e.metadata.resource_version)))


def test_killing_the_leader_mid_scale_lets_the_standby_act_within_15_s(installed, gpu_nodes, namespace, tmp_path):
    model = namespace
    token = controller_client(installed).configuration.api_key["authorization"].removeprefix("Bearer ")
    kubeconfig = installed.write_kubeconfig(tmp_path / "sa.kubeconfig", token=token, user="warmscale-controller")
    kubernetes.client.AppsV1Api(installed.api_client()).create_namespaced_deployment(
        namespace, engine_deployment("engine", 1))
    create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", maxReplicas=12))
    with FleetEmulator(load_profile("tiny-llama-cpu"), namespace=namespace) as fleet, \
            PodMirror(installed.api_client(), fleet, namespace, "app=engine", model) as mirror, \
            _controller_process(kubeconfig, namespace, "ctl-a", fleet.metrics_url_template, tmp_path) as a:
        wait_for(lambda: _holder(installed, namespace) == "ctl-a", 20, "ctl-a leads")
        with _controller_process(kubeconfig, namespace, "ctl-b", fleet.metrics_url_template, tmp_path) as b:
            mirror.wait_for(lambda p: len(p) == 1 and all(p.values()), timeout_s=30)
            _flood(fleet, model, 12)            # a queue of 8: a first, small scale-up
            wait_for(lambda: _scale_events(installed, namespace), 30, "ctl-a's first scale write")
            a.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            a.wait()
            _flood(fleet, model, 240)           # demand keeps rising: more scale writes are due
            wait_for(lambda: (read_ma(installed.api_client(), namespace, "engine").get("status") or {}).get("leader")
                     == "ctl-b", 15, "ctl-b writing status within 15 s of the kill")
            took_over_s = time.monotonic() - killed_at
            wait_for(lambda: any(e.reporting_instance == "ctl-b" for e in _scale_events(installed, namespace)), 20,
                     "a scale write by ctl-b")
            assert b.poll() is None
            final = _replicas(installed, namespace, "engine")
    assert took_over_s <= 15
    chain = [tuple(map(int, SCALE_EVENT.search(e.message).groups())) for e in _scale_events(installed, namespace)]
    writers = [e.reporting_instance for e in _scale_events(installed, namespace)]
    assert writers[0] == "ctl-a" and "ctl-b" in writers
    assert chain[0][0] == 1
    for (_, new), (old, _) in zip(chain, chain[1:]):
        assert old == new, f"scale writes do not chain: {chain}"
    assert all(old != new for old, new in chain), f"a write that changed nothing: {chain}"
    assert chain[-1][1] == final, f"the last write ({chain[-1]}) is not what the Deployment holds ({final})"
    _assert_audit_log_agrees(installed, namespace, chain, final)


def _assert_audit_log_agrees(cluster, namespace: str, chain: list[tuple[int, int]], final: int) -> None:
    """The API server's record of the controllers' scale writes: every accepted write changes the
    count, the last is what the Deployment holds, and every write an Event reports is in it. A write
    the SIGKILL cut off before its Event was posted is the only one the Events may lack."""
    user = f"system:serviceaccount:{CONTROLLER_NS}:{CONTROLLER_SA}"
    ours = [e for e in cluster.scale_writes(user)
            if e["objectRef"].get("namespace") == namespace and e["objectRef"].get("name") == "engine"]
    accepted = [e["requestObject"]["spec"]["replicas"] for e in ours if e["responseStatus"]["code"] == 200]
    refused = [e["responseStatus"]["code"] for e in ours if e["responseStatus"]["code"] != 200]
    assert set(refused) <= {409}, f"scale writes refused other than by a conflict: {refused}"
    counts = [chain[0][0], *accepted]
    assert all(old != new for old, new in zip(counts, counts[1:])), f"a repeated scale write in the audit log: {counts}"
    assert counts[-1] == final, f"the audit log's last write {counts[-1]} is not what the Deployment holds ({final})"
    written = set(zip(counts, counts[1:]))
    assert all(step in written for step in chain), f"an Event's write is missing from the audit log: {chain} vs {counts}"
    assert len(accepted) - len(chain) <= 1, f"writes without an Event: {counts} vs {chain}"
