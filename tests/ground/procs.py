"""Start, watch and stop the test ground's processes, with clear errors when one fails."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

LOG_TAIL_LINES = 25


class PartFailedToStart(RuntimeError):
    """A part of the test ground did not come up; the message says what, why, and how to fix it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_executable(path_or_name: str | Path, how_to_fix: str) -> str:
    """The executable's path, or an error that names it and says how to get it."""
    candidate = str(path_or_name)
    found = candidate if os.access(candidate, os.X_OK) and os.path.isfile(candidate) else shutil.which(candidate)
    if not found:
        raise PartFailedToStart(f"required executable not found: {candidate}\n  fix: {how_to_fix}")
    return found


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped with its children."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, ports: Sequence[int] = ()):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_dir / f"{name}.log"
        for port in ports:
            if port_is_taken(port):
                raise PartFailedToStart(f"{name}: port 127.0.0.1:{port} is already in use\n"
                                        f"  fix: stop whatever listens there (ss -ltnp 'sport = :{port}') and retry")
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)

    def failure(self, what: str, how_to_fix: str = "") -> PartFailedToStart:
        status = "still running" if self.proc.poll() is None else f"exited with code {self.proc.returncode}"
        fix = f"\n  fix: {how_to_fix}" if how_to_fix else ""
        return PartFailedToStart(
            f"{self.name} {what} ({status})\n  command: {' '.join(self.argv)}\n  log: {self.log_path}\n"
            f"  last log lines:\n{tail(self.log_path)}{fix}")

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str = "did not become ready",
                   how_to_fix: str = "", poll_s: float = 0.2) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.failure("exited during start-up", how_to_fix)
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - any probe error means "not yet"
                pass
            time.sleep(poll_s)
        raise self.failure(f"{what} within {timeout_s:.0f} s", how_to_fix)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=grace_s)
            except ProcessLookupError:
                pass
        else:
            try:  # the leader is gone; its children may not be
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
