"""Emulated engines for the fake pods of a real API server: `PodMirror` watches a model's pods and
tells a `FleetEmulator` which exist and which are Ready, so that their vLLM metrics appear on
loopback while the pods' own 10.x addresses are never dialled."""
from __future__ import annotations

import contextlib
import threading
import time

import kubernetes

from autoscaler.sim.emulator import FleetEmulator


def pod_ready(pod) -> bool:
    """Ready condition True and not terminating (a terminating pod leaves the Service's endpoints)."""
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


class PodMirror:
    """Mirrors the pods matching `selector` in `namespace` into `emulator` as model `model`.

    List, then watch from the list's resourceVersion; a watch that ends or expires (410) lists again.
    `events` counts the pod changes seen (tests wait on it); `pods()` is the current name -> Ready."""

    def __init__(self, api_client, emulator: FleetEmulator, namespace: str, selector: str, model: str):
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.emulator = emulator
        self.namespace = namespace
        self.selector = selector
        self.model = model
        self._pods: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"pod-mirror-{model}", daemon=True)
        self.events = 0
        self.error: str | None = None

    def pods(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._pods)

    def _publish(self) -> None:
        self.emulator.set_pods(self.model, self._pods)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                with self._lock:
                    self._pods = {p.metadata.name: pod_ready(p) for p in listed.items}
                    self._publish()
                self._watch = kubernetes.watch.Watch()
                for event in self._watch.stream(self.core.list_namespaced_pod, self.namespace,
                                                label_selector=self.selector,
                                                resource_version=listed.metadata.resource_version,
                                                timeout_seconds=5):
                    pod = event["object"]
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._pods.pop(pod.metadata.name, None)
                        else:
                            self._pods[pod.metadata.name] = pod_ready(pod)
                        self._publish()
                        self.events += 1
                    if self._stop.is_set():
                        return
            except kubernetes.client.ApiException as exc:
                if exc.status != 410:           # 410 Gone: the watch expired, list again
                    self.error = f"watching pods {self.selector!r} in {self.namespace}: HTTP {exc.status} {exc.reason}"
                    time.sleep(0.5)
            except Exception as exc:            # connection reset while the API server restarts, ...
                if self._stop.is_set():
                    return
                self.error = f"watching pods {self.selector!r} in {self.namespace}: {type(exc).__name__}: {exc}"
                time.sleep(0.5)

    def start(self) -> PodMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            with contextlib.suppress(Exception):
                self._watch.stop()
        self._thread.join(timeout=10)

    def __enter__(self) -> PodMirror:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for(self, predicate, timeout_s: float = 60.0) -> dict[str, bool]:
        """Wait until predicate(pods) holds; return the pods."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pods = self.pods()
            if predicate(pods):
                return pods
            time.sleep(0.1)
        raise TimeoutError(f"pods {self.selector!r} in {self.namespace} never matched within {timeout_s} s; "
                           f"last seen {self.pods()}; watch error: {self.error}")
