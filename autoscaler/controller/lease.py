"""Leader election on a coordination.k8s.io Lease, with client-go's rules.

- A candidate takes the Lease when it is free, released (empty holder) or expired: its record has
  not changed for `lease_s` seconds of the candidate's own clock (no clock-skew trust).
- Every write carries the Lease's resourceVersion, so two candidates racing get one 409.
- The leader renews every `retry_s`; it stops acting as soon as a renewal has not succeeded for
  `renew_deadline_s` (< lease_s), i.e. before any standby may take over.
- `release()` on graceful shutdown empties the holder so a standby takes over at once.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import kubernetes

__all__ = ["LeaderElector"]


def _now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
                 lease_s: float = 10.0, renew_deadline_s: float = 7.0, retry_s: float = 1.0,
                 on_error: Callable[[str, Exception], None] = lambda op, exc: None,
                 on_change: Callable[[bool], None] = lambda leader: None,
                 clock: Callable[[], float] = time.monotonic):
        if not retry_s < renew_deadline_s < lease_s:
            raise ValueError(f"need retry_s < renew_deadline_s < lease_s, got {retry_s}, {renew_deadline_s}, {lease_s}")
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_s, self.renew_deadline_s, self.retry_s = lease_s, renew_deadline_s, retry_s
        self._on_error, self._on_change, self._clock = on_error, on_change, clock
        self._renewed_at: float | None = None       # our last successful acquire/renew
        self._observed: tuple | None = None          # the other holder's record as last seen
        self._observed_at = 0.0
        self._leader = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    # ---------------------------------------------------------------- state
    def is_leader(self) -> bool:
        """True only while our last renewal is younger than the renew deadline."""
        return (self._leader and self._renewed_at is not None
                and self._clock() - self._renewed_at < self.renew_deadline_s)

    def start(self) -> "LeaderElector":
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if release and self._leader:
            self.release()
        self._set_leader(False)

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as exc:  # noqa: BLE001 - reported, retried next period
                self._on_error("lease", exc)
            if self._leader and not self.is_leader():
                self._set_leader(False)
            self._stop.wait(self.retry_s)

    def _set_leader(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            self._on_change(leader)

    def try_acquire_or_renew(self) -> bool:
        now = self._clock()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now)
        spec = lease.spec
        holder = spec.holder_identity or ""
        if holder != self.identity:
            record = (holder, spec.renew_time, spec.lease_transitions)
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = spec.lease_duration_seconds or self.lease_s
            if holder and now - self._observed_at < duration:
                self._set_leader(False)
                return False
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = _now_micro()
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = int(self.lease_s)
        spec.renew_time = _now_micro()
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)   # carries resourceVersion
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:      # someone else wrote first; look again next period
                return False
            raise
        self._renewed_at = now
        self._set_leader(True)
        return True

    def _create(self, now: float) -> bool:
        body = {"metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_s),
                         "acquireTime": _now_micro(), "renewTime": _now_micro(), "leaseTransitions": 0}}
        try:
            self.api.create_namespaced_lease(self.namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._renewed_at = now
        self._set_leader(True)
        return True

    def release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now_micro()
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            self._on_error("lease release", exc)
