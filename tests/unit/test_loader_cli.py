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


def fail_json(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> dict:
    """Run a command that must fail with ``code``: one JSON error object on stdout, one line on stderr."""
    assert main([*argv, "--json"]) == code
    captured = capsys.readouterr()
    error = json.loads(captured.out)
    assert error["exit_code"] == code
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    return error


def test_a_file_that_is_not_a_checkpoint_is_bad_input_not_a_traceback(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    error = fail_json(capsys, 3, "pull", str(passwd))
    assert str(passwd) in error["error"] and "neither .safetensors" in error["error"]
    readme = tmp_path / "some" / "readme.txt"
    readme.parent.mkdir()
    readme.write_text("hello\n")
    assert "readme.txt" in fail_json(capsys, 3, "pull", str(readme))["error"]
    assert main(["pull", str(passwd)]) == 3  # without --json: the one line on stderr only
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("warmscale-loader: error:")


def test_a_device_this_machine_lacks_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert "tpu" in fail_json(capsys, 2, "pull", str(tmp_path), "--device", "tpu")["error"]
    assert "nonsense" in fail_json(capsys, 2, "pull", str(tmp_path), "--device", "nonsense:x")["error"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    error = fail_json(capsys, 2, "pull", str(tmp_path), "--device", "cuda")
    assert "CUDA is not available" in error["error"]


def test_a_rejected_command_line_is_a_json_error_too(capsys: pytest.CaptureFixture[str]) -> None:
    error = fail_json(capsys, 2, "pull", "somewhere", "--concurrency", "many")
    assert "--concurrency" in error["error"] and "many" in error["error"]
    assert "concurrency=0" in fail_json(capsys, 2, "pull", "somewhere", "--concurrency", "0")["error"]


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    codes = {int(line.split()[0]) for line in out.split("exit codes:")[1].splitlines() if line[:3].strip().isdigit()}
    assert codes == {0, 1, 2, 3, 130}


def test_make_checkpoint_writes_about_the_size_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_json(capsys, "make-checkpoint", str(tmp_path / "ck"), "--size", "64MB")
    assert abs(made["bytes"] - 64_000_000) <= 0.1 * 64_000_000
    assert made["requested_bytes"] == 64_000_000 and made["hidden"] < 2048
    error = fail_json(capsys, 2, "make-checkpoint", str(tmp_path / "big"), "--size", "64MB", "--hidden", "4096")
    assert "hidden size 4096" in error["error"]
    assert not (tmp_path / "big").exists()  # refused before writing anything


def test_pull_from_a_mapped_staged_copy_counts_reading_its_pages(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "make-checkpoint", str(tmp_path / "ck"), "--size", "40MB")
    pulled = run_json(capsys, "pull", str(tmp_path / "ck"))
    assert pulled["mapped"] is True
    # Mapping alone "loads" any size in microseconds (hundreds of GB/s); reading a byte of every page
    # takes a page fault each, which no machine does at 100 GB/s.
    assert 0 < pulled["gb_per_s"] < 100


# Commands that never touch a tensor must not pay for importing torch.
_NO_TORCH_CHILD = """
import json, sys
from loader.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("command", ["inspect", "warm", "make-checkpoint", "help"])
def test_commands_without_tensors_do_not_import_torch(tmp_path: Path, command: str) -> None:
    import subprocess
    import sys

    from loader.make_checkpoint import CheckpointSpec, make_checkpoint

    make_checkpoint(tmp_path / "ck", CheckpointSpec(6_000_000, hidden=64))
    argv = {"inspect": ["inspect", str(tmp_path / "ck"), "--json"],
            "warm": ["warm", str(tmp_path / "ck"), "--cache-dir", str(tmp_path / "cache"), "--json"],
            "make-checkpoint": ["make-checkpoint", str(tmp_path / "new"), "--size", "10MB", "--json"],
            "help": ["pull", "--bogus-option", "--json"]}[command]
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH_CHILD, *argv], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == (2 if command == "help" else 0), proc.stderr
    assert result["torch"] is False
