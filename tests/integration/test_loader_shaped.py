"""The shaped object store of the test ground (versitygw behind toxiproxy) behaves as configured,
and the loader reads through it correctly, hedging past stalled connections."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loader.config import LoaderConfig
from loader.make_checkpoint import CheckpointSpec, make_checkpoint
from loader.stream import LoadReport, load_checkpoint
from tests.ground.toxiproxy import Shape, Toxiproxy, start_toxiproxy

pytestmark = pytest.mark.integration
RATE_KB_S = 4000  # 4 MB/s per connection: slow enough to measure in a fraction of a second


@pytest.fixture(scope="module")
def shaped(s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Toxiproxy, str]]:
    with start_toxiproxy(tmp_path_factory.mktemp("toxiproxy")) as toxi:
        listen = toxi.proxy("s3", s3_server.endpoint_url.removeprefix("http://"))
        yield toxi, f"http://{listen}"


@pytest.fixture(scope="module")
def ckpt_on_s3(s3_server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    directory = tmp_path_factory.mktemp("shaped-ckpt")
    make_checkpoint(directory, CheckpointSpec(total_bytes=10_000_000, shards=2, hidden=64))
    client = s3_server.client()
    for path in directory.iterdir():
        client.upload_file(str(path), s3_server.bucket, f"shaped/{path.name}")
    return f"s3://{s3_server.bucket}/shaped", directory


def _timed_get(s3_server, endpoint: str, key: str, length: int) -> tuple[float, float]:
    """(seconds to the first byte, seconds to the last) of one ranged GET on a new connection."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name=s3_server.region,
                          aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    started = time.perf_counter()
    body = client.get_object(Bucket=s3_server.bucket, Key=key, Range=f"bytes=0-{length - 1}")["Body"]
    first = body.read(1)
    first_s = time.perf_counter() - started
    rest = body.read()
    assert len(first) + len(rest) == length
    return first_s, time.perf_counter() - started


def test_each_connection_gets_the_rate_and_latency_asked_for(s3_server, shaped, ckpt_on_s3) -> None:
    toxi, endpoint = shaped
    toxi.shape("s3", Shape(RATE_KB_S, latency_ms=200))
    key = f"shaped/{sorted(p.name for p in ckpt_on_s3[1].glob('*.safetensors'))[0]}"
    first_s, total_s = _timed_get(s3_server, endpoint, key, 2_000_000)
    assert first_s >= 0.2
    assert 2_000_000 / (total_s - 0.2) <= RATE_KB_S * 1000 * 1.25  # capped (a little slack for timer edges)
    assert total_s < 3.0  # and not far below the cap either


def test_the_loader_hedges_past_stalled_connections(s3_server, shaped, ckpt_on_s3,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the connections stall. Toxiproxy draws that per connection, so a hedge can itself land
    on a stalled one and lose, and now and then a whole load has no winning hedge; across three
    loads a hedge that never wins is a broken hedge, not bad luck."""
    toxi, endpoint = shaped
    toxi.shape("s3", Shape(RATE_KB_S * 10, latency_ms=5, stall_share=0.5, stall_ms=2000))
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    location, directory = ckpt_on_s3
    want: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        want.update(load_file(path))
    config = LoaderConfig(endpoint_url=endpoint, range_bytes=256 * 1024, memory_limit_bytes=4 << 20, concurrency=8,
                          hedge_min_s=0.3)
    hedges = hedge_wins = 0
    for _ in range(3):
        report = LoadReport(location=location)
        got = load_checkpoint(location, "cpu", config, report=report)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        hedges += report.fetch.hedges
        hedge_wins += report.fetch.hedge_wins
        if hedge_wins:
            break
    assert hedges > 0 and hedge_wins > 0


def test_a_winning_hedge_closes_the_stalled_connection_at_once(s3_server, shaped, ckpt_on_s3,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One connection in ten holds every response 8 s. When a hedge wins, the stalled request is aborted
    (its socket shut down through botocore's connection) at once: by a second after the load returns no
    fetch thread is left blocked on it, and the hedge's bytes went in after the primary had stopped."""
    import threading

    toxi, _ = shaped
    # A proxy of its own: the module's proxy may still hold stalled connections of the test before, and
    # toxiproxy can take longer to swap the toxics of a connection that is stalled than its API waits.
    endpoint = f"http://{toxi.proxy('s3-abort', s3_server.endpoint_url.removeprefix('http://'))}"
    toxi.shape("s3-abort", Shape(RATE_KB_S * 10, latency_ms=5, stall_share=0.1, stall_ms=8000))
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    location, directory = ckpt_on_s3
    config = LoaderConfig(endpoint_url=endpoint, range_bytes=256 * 1024, memory_limit_bytes=4 << 20, concurrency=8,
                          hedge_min_s=0.3)
    for _ in range(6):  # until a load has a winning hedge (toxiproxy draws the stalled connections)
        report = LoadReport(location=location)
        load_checkpoint(location, "cpu", config, report=report)
        if report.fetch.hedge_wins:
            break
    assert report.fetch.hedge_wins > 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and any(
            t.name.startswith(("warmscale-fetch", "warmscale-hedge")) for t in threading.enumerate()):
        time.sleep(0.02)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("warmscale-fetch", "warmscale-hedge"))]
    assert report.fetch.losers_aborted >= report.fetch.hedge_wins
    assert report.fetch.losers_still_running == 0


def test_a_read_through_s3_reports_its_progress_as_its_body_comes(s3_server, shaped, ckpt_on_s3,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What the hedging monitor reads to tell a slow connection: the bytes a read has received so far, reported
    at every 128 KiB chunk through botocore's own connection."""
    import threading

    from loader.sources.abort import ReadHandle
    from loader.sources.base import CHUNK_BYTES
    from loader.sources.s3 import S3Source

    toxi, _ = shaped
    # a proxy of its own: the module's may still hold stalled connections of the tests before
    endpoint = f"http://{toxi.proxy('s3-progress', s3_server.endpoint_url.removeprefix('http://'))}"
    toxi.shape("s3-progress", Shape(RATE_KB_S, latency_ms=5))
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    location, directory = ckpt_on_s3
    name = sorted(p.name for p in directory.glob("*.safetensors"))[0]
    source, handle, buf = S3Source(location, endpoint_url=endpoint), ReadHandle(), memoryview(bytearray(1 << 20))
    seen: list[int] = []
    reader = threading.Thread(target=lambda: _read_with(handle, source, name, buf))
    reader.start()
    while reader.is_alive():  # 1 MiB at 4 MB/s: about a quarter of a second
        seen.append(handle.received)
        time.sleep(0.01)
    reader.join()
    assert bytes(buf) == (directory / name).read_bytes()[:1 << 20]
    progress = sorted(set(seen))
    assert len(progress) >= 3 and progress[-1] >= len(buf) - CHUNK_BYTES, progress  # it moved, chunk by chunk


def _read_with(handle, source, name: str, buf: memoryview) -> None:  # noqa: ANN001 - loader types
    from loader.sources.abort import reading

    with reading(handle):
        source.read_into(name, 0, buf, None)
