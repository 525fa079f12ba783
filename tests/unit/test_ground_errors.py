"""A broken test ground says what failed, shows its log and how to fix it."""
from __future__ import annotations

import socket
import sys

import pytest

from tests.ground.procs import ManagedProcess, PartFailedToStart, free_port, require_executable


def test_missing_executable_names_it_and_the_fix():
    with pytest.raises(PartFailedToStart) as error:
        require_executable("/nonexistent/kube-apiserver", "run bash hack/setup.sh")
    assert "/nonexistent/kube-apiserver" in str(error.value)
    assert "bash hack/setup.sh" in str(error.value)


def test_port_clash_is_reported_before_start(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PartFailedToStart) as error:
            ManagedProcess("etcd", [sys.executable, "-c", "pass"], tmp_path, ports=[port])
    assert f"127.0.0.1:{port} is already in use" in str(error.value)


def test_part_that_dies_during_start_shows_its_last_log_lines(tmp_path):
    script = "import sys; print('loading config'); print('fatal: bad flag --nope', file=sys.stderr); sys.exit(3)"
    with ManagedProcess("fake-part", [sys.executable, "-c", script], tmp_path) as part:
        with pytest.raises(PartFailedToStart) as error:
            part.wait_until(lambda: False, timeout_s=10, how_to_fix="remove --nope")
    message = str(error.value)
    assert "fake-part exited during start-up (exited with code 3)" in message
    assert "fatal: bad flag --nope" in message and "remove --nope" in message


def test_part_that_never_gets_ready_times_out_and_is_stopped(tmp_path):
    part = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path,
                          ports=[free_port()])
    with part, pytest.raises(PartFailedToStart, match="did not become ready within 1 s"):
        part.wait_until(lambda: False, timeout_s=1)
    assert part.proc.poll() is not None
