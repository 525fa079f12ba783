"""The warmscale-loader command line: JSON output for scripts, exit codes, size parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loader.cli import main, parse_size


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_make_inspect_pull_warm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_json(capsys, "make-checkpoint", str(tmp_path / "ck"), "--size", "20MB", "--shards", "2", "--hidden", "128")
    assert len(made["shards"]) == 2 and made["bytes"] > 15_000_000
    info = run_json(capsys, "inspect", str(tmp_path / "ck"))
    assert info["index"] == "model.safetensors.index.json" and len(info["shards"]) == 2
    pulled = run_json(capsys, "pull", str(tmp_path / "ck"), "--memory-limit", "1MiB", "--range-size", "256KiB")
    assert pulled["bytes"] == sum(s["bytes"] - s["header_bytes"] - 8 for s in info["shards"])
    assert pulled["gb_per_s"] > 0 and pulled["tensors"] > 10
    warmed = run_json(capsys, "warm", str(tmp_path / "ck"), "--cache-dir", str(tmp_path / "cache"), "--verify-local")
    assert warmed["verified"] is True and warmed["downloaded_bytes"] == warmed["bytes"]
    again = run_json(capsys, "pull", str(tmp_path / "ck"), "--cache-dir", str(tmp_path / "cache"))
    assert again["loaded_from"] == warmed["path"]


def test_bad_setting_names_field_and_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", str(tmp_path), "--concurrency", "0"]) == 2
    err = capsys.readouterr().err
    assert "concurrency=0" in err


def test_load_failure_is_reported_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", str(tmp_path / "nothing-here"), "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert "nothing-here" in out["error"]


@pytest.mark.parametrize(("text", "value"), [("4096", 4096), ("3GB", 3 * 10**9), ("512MiB", 512 << 20), ("1.5k", 1500)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_parse_size_rejects_garbage() -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="12XB"):
        parse_size("12XB")
