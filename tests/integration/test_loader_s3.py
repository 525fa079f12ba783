"""The loader against the real S3 server of the test ground (versitygw on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loader.cache import WarmCache
from loader.config import LoaderConfig
from loader.errors import AccessDeniedError, ObjectNotFoundError
from loader.make_checkpoint import CheckpointSpec, make_checkpoint
from loader.stream import LoadReport, load_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    make_checkpoint(directory, CheckpointSpec(total_bytes=20_000_000, shards=2, hidden=192, sha256_sidecars=True))
    return directory


@pytest.fixture(scope="module")
def s3_ckpt(s3_server, local_ckpt: Path) -> str:
    client = s3_server.client()
    for path in local_ckpt.iterdir():
        client.upload_file(str(path), s3_server.bucket, f"loader-it/ckpt/{path.name}")
    return f"s3://{s3_server.bucket}/loader-it/ckpt"


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def reference(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> bool:
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "ring"])
def test_sharded_load_from_s3_matches_local(s3_env, s3_ckpt: str, local_ckpt: Path, direct: bool) -> None:
    config = LoaderConfig(range_bytes=1 << 20, memory_limit_bytes=4 << 20, concurrency=4, verify_sha256=True,
                          direct_host_reads=direct)
    report = LoadReport(location=s3_ckpt)
    got = load_checkpoint(s3_ckpt, "cpu", config, report=report)
    assert same(got, reference(local_ckpt))
    assert report.resolved_from == s3_ckpt and report.fetch.retries == 0


def test_endpoint_override_without_endpoint_variables(s3_server, s3_ckpt: str, local_ckpt: Path, monkeypatch) -> None:
    for key, value in s3_server.env().items():
        if "ENDPOINT" not in key:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    got = load_checkpoint(s3_ckpt, "cpu", LoaderConfig(endpoint_url=s3_server.endpoint_url))
    assert same(got, reference(local_ckpt))


def test_access_denied(s3_env, s3_ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(AccessDeniedError, match="loader-it/ckpt"):
        load_checkpoint(s3_ckpt, "cpu", LoaderConfig())


def test_an_unknown_access_key_is_reported_as_the_server_said_it(s3_env, s3_ckpt: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    # AWS answers 403 InvalidAccessKeyId; versitygw answers 404 XAdminUserNotFound: neither is "not found".
    with pytest.raises(AccessDeniedError, match="InvalidAccessKeyId|XAdminUserNotFound") as raised:
        load_checkpoint(s3_ckpt, "cpu", LoaderConfig())
    assert "check the credentials" in str(raised.value) and "not found" not in str(raised.value)
    pull = subprocess.run([sys.executable, "-m", "loader.cli", "pull", s3_ckpt, "--json"], capture_output=True,
                          text=True, env={**os.environ}, timeout=120)
    assert pull.returncode == 3
    error = json.loads(pull.stdout)
    assert "access key" in error["error"].lower() and "check the credentials" in error["error"]


def test_missing_shard_on_s3(s3_env, s3_server, local_ckpt: Path) -> None:
    client = s3_server.client()
    for path in local_ckpt.iterdir():
        if not path.name.startswith("model-00002"):
            client.upload_file(str(path), s3_server.bucket, f"loader-it/broken/{path.name}")
    with pytest.raises(ObjectNotFoundError, match="model-00002-of-00002.safetensors"):
        load_checkpoint(f"s3://{s3_server.bucket}/loader-it/broken", "cpu", LoaderConfig())


def test_truncated_object_on_s3(s3_env, s3_server, local_ckpt: Path) -> None:
    from loader.errors import CheckpointFormatError

    shard = sorted(local_ckpt.glob("*.safetensors"))[0]
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="loader-it/trunc/model.safetensors",
                                  Body=shard.read_bytes()[:-4096])
    with pytest.raises(CheckpointFormatError, match="out of bounds"):
        load_checkpoint(f"s3://{s3_server.bucket}/loader-it/trunc", "cpu", LoaderConfig())


def test_http_range_source_with_a_presigned_url(s3_env, s3_server, local_ckpt: Path) -> None:
    shard = sorted(local_ckpt.glob("*.safetensors"))[0]
    client = s3_server.client(signature_version="s3v4")
    client.upload_file(str(shard), s3_server.bucket, "loader-it/http/model.safetensors")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_server.bucket, "Key": "loader-it/http/model.safetensors"}, ExpiresIn=600
    )
    assert url.startswith("http://127.0.0.1")
    got = load_checkpoint(url, "cpu", LoaderConfig(range_bytes=1 << 20, memory_limit_bytes=4 << 20))
    assert same(got, load_file(shard))


def test_warm_cli_from_s3_then_pull_prefers_local(s3_env, s3_ckpt: str, tmp_path: Path) -> None:
    env = {**os.environ}
    cmd = [sys.executable, "-m", "loader.cli"]
    warm = subprocess.run([*cmd, "warm", s3_ckpt, "--cache-dir", str(tmp_path), "--budget", "1GB", "--json",
                           "--verify-sha256"], capture_output=True, text=True, env=env, timeout=120)
    assert warm.returncode == 0, warm.stderr
    staged = json.loads(warm.stdout)
    assert staged["downloaded_bytes"] == staged["bytes"] > 0
    assert {p.name for p in Path(staged["path"]).iterdir()} >= {"model.safetensors.index.json", "entry.json"}
    pull = subprocess.run([*cmd, "pull", s3_ckpt, "--cache-dir", str(tmp_path), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert pull.returncode == 0, pull.stderr
    assert json.loads(pull.stdout)["loaded_from"] == staged["path"]
    assert WarmCache(tmp_path).verify(s3_ckpt)
