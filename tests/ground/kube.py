"""A real Kubernetes control plane on loopback: etcd, kube-apiserver (TLS, token auth, RBAC,
service-account token signing, an audit log of scale writes), kube-controller-manager, kube-scheduler,
and kwok managing fake GPU nodes."""
from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import json

import httpx
import kubernetes
import yaml

from tests.ground.binaries import binary
from tests.ground.pki import make_control_plane_pki
from tests.ground.procs import ManagedProcess, free_port

STAGES_FILE = Path(__file__).with_name("kwok_stages.yaml")
READY_DELAY_ANNOTATION = "warmscale.io/fake-ready-after"
FAKE_NODE_LABEL = {"warmscale.io/fake-node": "kwok"}
GPU_RESOURCE = "nvidia.com/gpu"
# Fake pods get addresses from this range; nothing here may ever dial them.
FAKE_POD_CIDR = "10.244.0.1/16"
# What the API server's audit log records: every write to a scale subresource, with its request
# body (so a test can read which replica count each writer asked for); nothing else.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Request", "verbs": ["update", "patch"],
         "resources": [{"group": "apps", "resources": ["deployments/scale", "statefulsets/scale"]}]},
        {"level": "None"},
    ],
}


@dataclass
class KubeCluster:
    server: str
    ca_file: Path
    admin_token: str
    workdir: Path
    _clients: list = field(default_factory=list)

    def api_client(self, token: str | None = None) -> kubernetes.client.ApiClient:
        """A client authenticated by bearer token (the admin's by default)."""
        config = kubernetes.client.Configuration()
        config.host = self.server
        config.ssl_ca_cert = str(self.ca_file)
        config.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        client = kubernetes.client.ApiClient(config)
        self._clients.append(client)
        return client

    def as_service_account(self, namespace: str, name: str, create: bool = True) -> kubernetes.client.ApiClient:
        """A client that acts as ServiceAccount namespace/name, through a token from the TokenRequest API."""
        core = kubernetes.client.CoreV1Api(self.api_client())
        if create:
            with contextlib.suppress(kubernetes.client.ApiException):
                core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        return self.api_client(token)

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        path.write_text(yaml.safe_dump(_kubeconfig(self.server, self.ca_file, token or self.admin_token, user)))
        return path

    def add_gpu_nodes(self, count: int, gpus_per_node: int = 8, prefix: str = "gpu-node") -> list[str]:
        """Create fake nodes that kwok manages, each with `gpus_per_node` nvidia.com/gpu."""
        core = kubernetes.client.CoreV1Api(self.api_client())
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", GPU_RESOURCE: str(gpus_per_node)}
        names = []
        for index in range(count):
            name = f"{prefix}-{index}"
            core.create_node({"metadata": {"name": name, "labels": {**FAKE_NODE_LABEL, "kubernetes.io/hostname": name,
                                                                     "nvidia.com/gpu.present": "true"}},
                              "status": {"capacity": resources, "allocatable": resources}})
            core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
            names.append(name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nodes = [core.read_node(n) for n in names]
            if all(_node_ready(n) and not n.spec.taints and GPU_RESOURCE in (n.status.allocatable or {}) for n in nodes):
                return names
            time.sleep(0.2)
        raise TimeoutError(f"fake nodes {names} did not become Ready, untainted, with {GPU_RESOURCE} within 30 s; "
                           f"see {self.workdir / 'logs' / 'kwok.log'}")

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def scale_writes(self, user: str | None = None) -> list[dict]:
        """Audit events of completed writes to scale subresources, oldest first, by `user` when given."""
        if not self.audit_log.exists():
            return []
        events = [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]
        return [e for e in events if e.get("stage") == "ResponseComplete"
                and (user is None or e.get("user", {}).get("username") == user)]

    def close(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()


def _node_ready(node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def _kubeconfig(server: str, ca_file: Path, token: str, user: str) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "ground",
            "clusters": [{"name": "ground", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "ground", "context": {"cluster": "ground", "user": user}}]}


def _healthy(url: str, token: str, ca_file: Path) -> bool:
    tls = ssl.create_default_context(cafile=str(ca_file))
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, verify=tls, timeout=2)
    return response.status_code == 200


@contextlib.contextmanager
def start_cluster(workdir: Path) -> Iterator[KubeCluster]:
    """Start the whole control plane; everything is stopped when the context exits, even on failure."""
    logs = workdir / "logs"
    pki = make_control_plane_pki(workdir / "pki")
    tokens = {user: secrets.token_hex(16) for user in ("admin", "controller-manager", "scheduler", "kwok")}
    (workdir / "tokens.csv").write_text("\n".join([
        f'{tokens["admin"]},admin,admin-uid,"system:masters"',
        f'{tokens["controller-manager"]},system:kube-controller-manager,kcm-uid',
        f'{tokens["scheduler"]},system:kube-scheduler,sched-uid',
        f'{tokens["kwok"]},kwok,kwok-uid,"system:masters"',
    ]) + "\n")
    etcd_port, etcd_peer, api_port, kcm_port, sched_port, kwok_port = (free_port() for _ in range(6))
    server = f"https://127.0.0.1:{api_port}"
    audit_policy = workdir / "audit-policy.yaml"
    audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))

    with contextlib.ExitStack() as stack:
        etcd = stack.enter_context(ManagedProcess("etcd", [
            binary("etcd"), "--name", "ground", "--data-dir", workdir / "etcd",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"ground=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn"], logs, ports=[etcd_port, etcd_peer]))
        etcd.wait_until(lambda: httpx.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1).status_code == 200, 30)

        apiserver = stack.enter_context(ManagedProcess("kube-apiserver", [
            binary("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--anonymous-auth=false",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki['sa.pub']}", f"--service-account-signing-key-file={pki['sa.key']}",
            "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--audit-policy-file={audit_policy}", f"--audit-log-path={workdir / 'audit.log'}",
            "--audit-log-format=json", "--audit-log-mode=blocking"], logs, ports=[api_port]))
        apiserver.wait_until(lambda: _healthy(f"{server}/readyz", tokens["admin"], pki["ca.crt"]), 60,
                             how_to_fix="read the kube-apiserver log above; etcd must be healthy first")

        def kubeconfig_for(user: str) -> Path:
            path = workdir / f"{user}.kubeconfig"
            path.write_text(yaml.safe_dump(_kubeconfig(server, pki["ca.crt"], tokens[user], user)))
            return path

        kcm_config = kubeconfig_for("controller-manager")
        controller_manager = stack.enter_context(ManagedProcess("kube-controller-manager", [
            binary("kube-controller-manager"), f"--kubeconfig={kcm_config}",
            f"--authentication-kubeconfig={kcm_config}", f"--authorization-kubeconfig={kcm_config}",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", "--leader-elect=false",
            # kwok renews the fake nodes' leases, so node lifecycle lifts their not-ready taint as on a real cluster.
            "--controllers=*,-nodeipam,-cloud-node-lifecycle", "--node-monitor-grace-period=60s",
            f"--service-account-private-key-file={pki['sa.key']}", f"--root-ca-file={pki['ca.crt']}",
            "--use-service-account-credentials=true"], logs, ports=[kcm_port]))
        scheduler_config = kubeconfig_for("scheduler")
        scheduler = stack.enter_context(ManagedProcess("kube-scheduler", [
            binary("kube-scheduler"), f"--kubeconfig={scheduler_config}",
            f"--authentication-kubeconfig={scheduler_config}", f"--authorization-kubeconfig={scheduler_config}",
            "--bind-address=127.0.0.1", f"--secure-port={sched_port}", "--leader-elect=false"], logs,
            ports=[sched_port]))
        kwok = stack.enter_context(ManagedProcess("kwok", [
            binary("kwok"), f"--kubeconfig={kubeconfig_for('kwok')}", f"--config={STAGES_FILE}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-label-selector=" + ",".join(f"{k}={v}" for k, v in FAKE_NODE_LABEL.items()),
            f"--cidr={FAKE_POD_CIDR}", "--node-ip=10.244.255.254", f"--server-address=127.0.0.1:{kwok_port}",
            "--node-lease-duration-seconds=40"], logs, ports=[kwok_port]))

        for part, port in ((controller_manager, kcm_port), (scheduler, sched_port)):
            part.wait_until(lambda p=port: httpx.get(f"https://127.0.0.1:{p}/healthz", verify=False,
                                                     timeout=1).status_code == 200, 60)
        kwok.wait_until(lambda: httpx.get(f"http://127.0.0.1:{kwok_port}/healthz", timeout=1).status_code == 200, 30)
        cluster = KubeCluster(server=server, ca_file=pki["ca.crt"], admin_token=tokens["admin"], workdir=workdir)
        stack.callback(cluster.close)
        _wait_for_default_service_account(cluster, controller_manager)
        yield cluster


def _wait_for_default_service_account(cluster: KubeCluster, controller_manager: ManagedProcess) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    controller_manager.wait_until(lambda: core.read_namespaced_service_account("default", "default") is not None,
                                  60, what="did not create the default ServiceAccount")
