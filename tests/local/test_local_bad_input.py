"""`warmscale local` on bad input: each a one-line error naming the problem, a documented exit code,
and nothing left running."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.local.conftest import WARMSCALE, model_entry, write_config

pytestmark = pytest.mark.integration


def _run(config: Path, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*WARMSCALE, "local", "--config", str(config), "--plain"], capture_output=True, text=True,
                          timeout=timeout_s, cwd=Path(__file__).resolve().parents[2])


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert lines, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_key_is_named(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", models=[{**model_entry(tmp_path), "max_replica": 2}])
    proc = _run(cfg)
    assert proc.returncode == 2
    assert "models[0].max_replica: unknown key" in _error_line(proc)
    assert not (tmp_path / ".warmscale-local").exists()   # nothing started, nothing written


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    cfg = write_config(tmp_path / "c.yaml", models=[model_entry(missing)])
    proc = _run(cfg)
    assert proc.returncode == 2
    line = _error_line(proc)
    assert f"{missing}" in line and "is not a directory" in line


def test_bad_policy_setting_is_named(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", models=[model_entry(tmp_path, policy={"settings": {"target_util": 1}})])
    proc = _run(cfg)
    assert proc.returncode == 2 and "target_util" in _error_line(proc)


def test_port_in_use_is_named_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "c.yaml", router={"port": port}, models=[model_entry(tmp_path)])
        proc = _run(cfg)
    assert proc.returncode == 3
    assert f"127.0.0.1:{port}" in _error_line(proc)


def test_engine_that_exits_at_once_stops_cleanly(tmp_path):
    marker = tmp_path / "engine-ran"
    command = ["/bin/sh", "-c", f"touch {marker}; echo 'engine: no such model' >&2; exit 3", "engine"]
    cfg = write_config(tmp_path / "c.yaml", state_dir="state",
                       models=[model_entry(tmp_path, command=command, min_replicas=1)])
    proc = _run(cfg)
    assert marker.exists()   # the engine did start, and exited
    assert proc.returncode == 4
    line = _error_line(proc)
    assert "exited during start-up with code 3" in line and "'tiny'" in line
    assert "engine: no such model" in proc.stderr   # the engine's own last log lines are shown
