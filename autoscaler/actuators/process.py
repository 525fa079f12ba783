"""Engines as local processes: start, readiness by /health, graceful stop, crash detection and restart.

One `ProcessSupervisor` per model keeps that model's engines at the count it is told (`scale_to`):

- start: a new process group per engine on a free loopback port, its output in a log file, on the
  next free device slot (GPU indices, or CPU); Ready once `GET /health` answers 200.
- stop, gracefully: the engine leaves the Ready list at once (the router stops sending to it),
  then waits until it has nothing in flight (the router's count for it is 0), at most
  `drain_timeout_s`; then SIGTERM to its process group, SIGKILL after `stop_grace_s`.
  A loading engine is stopped before a Ready one; among Ready ones the least loaded goes.
- crash: an engine whose process exits (or whose /health fails `unhealthy_after` checks in a row)
  is counted in `restarts` and replaced at once. An engine that fails to start before any engine
  of the model was ever Ready, or `max_start_failures` times in a row, makes the supervisor
  `failed` (the command or the model is broken): the caller reports it and stops.

`tick()` does one round of checks; the caller runs it every second or two. Not thread-safe:
one thread drives a supervisor; `ready()` may be read from others (it returns a fresh tuple).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx

__all__ = ["EngineState", "EngineProcess", "Launch", "ProcessSupervisor", "free_port", "tail"]

# argv and extra environment for an engine on `port` with the device slot `devices`
Launch = Callable[[int, tuple[str, ...]], tuple[list[str], dict[str, str]]]


class EngineState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"     # out of the Ready list, waiting for its in-flight requests
    STOPPING = "stopping"     # SIGTERM sent
    STOPPED = "stopped"
    CRASHED = "crashed"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


@dataclass
class EngineProcess:
    """One engine process (started here, or adopted from a previous run by pid)."""

    id: str
    port: int
    devices: tuple[str, ...]
    log_path: Path
    pid: int
    started_at: float
    state: EngineState = EngineState.STARTING
    ready_at: float | None = None
    drain_since: float | None = None
    health_failures: int = 0
    exit_code: int | None = None
    _popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def launch(cls, engine_id: str, argv: Sequence[str], env: dict[str, str], port: int, devices: tuple[str, ...],
               log_path: Path, now: float) -> EngineProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **env}, start_new_session=True)
        return cls(engine_id, port, devices, log_path, popen.pid, now, _popen=popen)

    def alive(self) -> bool:
        if self._popen is not None:
            code = self._popen.poll()
            if code is not None:
                self.exit_code = code
            return code is None
        return _pid_alive(self.pid)

    def healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self, grace_s: float) -> None:
        """SIGTERM to the process group, SIGKILL after `grace_s`; returns when it is gone."""
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            self.signal_group(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.signal_group(signal.SIGKILL)   # children that outlived their leader
        if self._popen is not None:
            try:
                self._popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


class ProcessSupervisor:
    """Keeps one model's engines at a count; see the module docstring."""

    def __init__(self, model: str, launch: Launch, log_dir: Path, *, device_slots: Sequence[tuple[str, ...]] | None,
                 inflight: Callable[[str], int] = lambda _id: 0, on_change: Callable[[], None] = lambda: None,
                 start_timeout_s: float = 600.0, drain_timeout_s: float = 300.0, stop_grace_s: float = 30.0,
                 unhealthy_after: int = 5, max_start_failures: int = 3, clock: Callable[[], float] = time.time,
                 on_event: Callable[[str, str, dict], None] = lambda *_: None):
        self.model = model
        self._launch = launch
        self._log_dir = log_dir
        self._slots = list(device_slots) if device_slots is not None else None   # None: CPU, no slot limit
        self._inflight = inflight
        self._on_change = on_change
        self._on_event = on_event
        self.start_timeout_s, self.drain_timeout_s, self.stop_grace_s = start_timeout_s, drain_timeout_s, stop_grace_s
        self.unhealthy_after, self.max_start_failures = unhealthy_after, max_start_failures
        self._clock = clock
        self.engines: dict[str, EngineProcess] = {}
        self.desired = 0
        self.restarts = 0
        self.start_failures_in_a_row = 0
        self.failed: str | None = None     # set when the engine command is broken; the caller stops
        self.ever_ready = False
        self._launched = 0
        self._stoppers: list[threading.Thread] = []
        self._http = httpx.Client(timeout=2.0)

    # ------------------------------------------------------------------ views
    def _in(self, *states: EngineState) -> list[EngineProcess]:
        return [e for e in self.engines.values() if e.state in states]

    def ready(self) -> tuple[EngineProcess, ...]:
        return tuple(e for e in list(self.engines.values()) if e.state is EngineState.READY)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in EngineState}
        for e in list(self.engines.values()):
            out[e.state.value] += 1
        return out

    @property
    def max_engines(self) -> int | None:
        return None if self._slots is None else len(self._slots)

    # ------------------------------------------------------------------ acting
    def scale_to(self, n: int) -> None:
        """Bring the engines that are starting or Ready to `n` (at most the device slots)."""
        if self.failed:
            return
        self.desired = n if self._slots is None else min(n, len(self._slots))
        active = self._in(EngineState.STARTING, EngineState.READY)
        for _ in range(self.desired - len(active)):
            self._start_one()
        if len(active) > self.desired:
            starting = sorted(self._in(EngineState.STARTING), key=lambda e: -e.started_at)
            ready = sorted(self._in(EngineState.READY), key=lambda e: self._inflight(e.id))
            for engine in (starting + ready)[: len(active) - self.desired]:
                self._drain(engine)

    def _free_slot(self) -> tuple[str, ...] | None:
        if self._slots is None:
            return ()
        used = {e.devices for e in self.engines.values() if e.state is not EngineState.STOPPED}
        return next((s for s in self._slots if s not in used), None)

    def _start_one(self) -> EngineProcess | None:
        slot = self._free_slot()
        if slot is None:
            return None
        self._launched += 1
        engine_id = f"{self.model}-{self._launched}-{os.getpid() % 10000}"
        port = free_port()
        argv, env = self._launch(port, slot)
        engine = EngineProcess.launch(engine_id, argv, env, port, slot, self._log_dir / f"{engine_id}.log",
                                      self._clock())
        self.engines[engine_id] = engine
        self._on_event("engine_started", engine_id, {"port": port, "pid": engine.pid, "devices": list(slot)})
        return engine

    def adopt(self, engine: EngineProcess) -> None:
        """Take over an engine a previous run started (still alive); it is checked like any other."""
        self.engines[engine.id] = engine
        self.ever_ready = self.ever_ready or engine.ready_at is not None
        self._launched += 1

    def _drain(self, engine: EngineProcess) -> None:
        was_ready = engine.state is EngineState.READY
        engine.state = EngineState.DRAINING
        engine.drain_since = self._clock()
        self._on_event("engine_draining", engine.id, {"inflight": self._inflight(engine.id)})
        if was_ready:
            self._on_change()

    def _stop(self, engine: EngineProcess, grace_s: float | None = None) -> None:
        engine.state = EngineState.STOPPING

        def stop() -> None:
            engine.terminate(self.stop_grace_s if grace_s is None else grace_s)
            engine.state = EngineState.STOPPED
            self._on_event("engine_stopped", engine.id, {"exit_code": engine.exit_code})

        thread = threading.Thread(target=stop, name=f"stop-{engine.id}", daemon=True)
        thread.start()
        self._stoppers.append(thread)

    # ------------------------------------------------------------------ checking
    def tick(self) -> None:
        """One round: readiness, crashes, drains; then top up to `desired`."""
        now = self._clock()
        changed = False
        for engine in list(self.engines.values()):
            if engine.state is EngineState.STARTING:
                changed |= self._check_starting(engine, now)
            elif engine.state is EngineState.READY:
                changed |= self._check_ready(engine)
            elif engine.state is EngineState.DRAINING:
                self._check_draining(engine, now)
        for engine_id in [i for i, e in self.engines.items() if e.state in (EngineState.STOPPED, EngineState.CRASHED)]:
            del self.engines[engine_id]
        self._stoppers = [t for t in self._stoppers if t.is_alive()]
        if changed:
            self._on_change()
        if not self.failed:
            self.scale_to(self.desired)

    def _check_starting(self, engine: EngineProcess, now: float) -> bool:
        if not engine.alive():
            self._start_failed(engine, f"exited during start-up with code {engine.exit_code}")
            return False
        if engine.healthy(self._http):
            engine.state, engine.ready_at = EngineState.READY, now
            self.start_failures_in_a_row = 0
            self.ever_ready = True
            self._on_event("engine_ready", engine.id, {"start_s": round(now - engine.started_at, 1)})
            return True
        if now - engine.started_at > self.start_timeout_s:
            self._stop(engine, grace_s=5.0)
            self._start_failed(engine, f"not Ready after start_timeout_s {self.start_timeout_s:g} s", stopping=True)
        return False

    def _start_failed(self, engine: EngineProcess, why: str, stopping: bool = False) -> None:
        self.start_failures_in_a_row += 1
        if not stopping:
            engine.state = EngineState.CRASHED
        self._on_event("engine_start_failed", engine.id, {"why": why, "log": str(engine.log_path)})
        if not self.ever_ready or self.start_failures_in_a_row >= self.max_start_failures:
            self.failed = (f"model {self.model!r}: engine {why} ({self.start_failures_in_a_row} failed start(s) "
                           f"in a row{'' if self.ever_ready else ', none Ready yet'}); log {engine.log_path}; "
                           f"last lines:\n{tail(engine.log_path)}")
            self.stop_all(grace_s=5.0)
        else:
            self.restarts += 1

    def _check_ready(self, engine: EngineProcess) -> bool:
        if engine.alive() and engine.healthy(self._http):
            engine.health_failures = 0
            return False
        engine.health_failures += 1
        if engine.alive() and engine.health_failures < self.unhealthy_after:
            return False
        why = (f"exited with code {engine.exit_code}" if not engine.alive()
               else f"/health failed {engine.health_failures} times in a row")
        self.restarts += 1
        self._on_event("engine_crashed", engine.id, {"why": why, "restarts": self.restarts})
        if engine.alive():
            self._stop(engine, grace_s=5.0)
        else:
            engine.state = EngineState.CRASHED
            engine.signal_group(signal.SIGKILL)   # children left behind by a dead leader
        return True

    def _check_draining(self, engine: EngineProcess, now: float) -> None:
        idle = self._inflight(engine.id) == 0
        if idle or now - (engine.drain_since or now) > self.drain_timeout_s or not engine.alive():
            self._on_event("engine_stopping", engine.id, {"drained": idle})
            self._stop(engine)

    # ------------------------------------------------------------------ shutdown
    def stop_all(self, grace_s: float | None = None, wait: bool = True) -> None:
        """Stop every engine now (no drain); with `wait`, return when all are gone."""
        self.desired = 0
        had_ready = bool(self.ready())
        for engine in list(self.engines.values()):
            if engine.state in (EngineState.STARTING, EngineState.READY, EngineState.DRAINING):
                self._stop(engine, grace_s)
        if had_ready:
            self._on_change()
        if wait:
            for thread in list(self._stoppers):
                thread.join()

    def close(self) -> None:
        self._http.close()
