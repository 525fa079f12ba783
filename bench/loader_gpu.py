"""GPU weight-loading benchmark, self-contained for a single H100 (<= 5 minutes, no network).

    python3 bench/loader_gpu.py [--size 4GB] [--wheels DIR] [--out DIR]

Measures, in one run and on one machine:
  * the host-to-device ceiling: pinned (page-locked) and pageable ``copy_`` of 1 GiB;
  * warmscale from a page-cached local file into GPU memory;
  * warmscale from a loopback S3 server into GPU memory;
  * the baselines: ``safetensors.load_file`` + ``.to("cuda")``, ``load_file(device="cuda")``,
    and runai-model-streamer (local and S3) + ``.to("cuda")`` as vLLM uses it;
and prints ratios. The S3 server is the small threaded range server below (GET with Range,
HEAD, ListObjectsV2, ``sendfile`` bodies, no auth checks): the GPU machine reaches no network, and
carries nothing but this repository.

Packages the GPU image may lack (pydantic, boto3, runai-model-streamer) can travel as wheels,
downloaded for the target's Python into a git-ignored folder and passed as ``--wheels DIR`` (they
are installed into a temporary folder and put on ``sys.path``), for example::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_30_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0 \
        runai-model-streamer==0.17.0 runai-model-streamer-s3==0.17.1

(about 26 MB). Without CUDA the same script runs on the CPU (a smaller checkpoint, device "cpu"), which is
how it is checked on machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MiB = 1 << 20
DEADLINE_S = 270.0


# ----------------------------------------------------------------------------- range server


class RangeS3Server(ThreadingHTTPServer):
    """A loopback, S3-compatible (for reads) server over a directory: ``/<bucket>/<key>``."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, root: Path, bucket: str) -> None:
        self.root, self.bucket = root, bucket
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.endpoint_url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> RangeS3Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RangeS3Server

    def log_message(self, *args: object) -> None:
        pass

    def _error(self, status: int, code: str) -> None:
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _list(self, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        items = []
        for path in sorted(self.server.root.rglob("*")):
            key = str(path.relative_to(self.server.root))
            if path.is_file() and key.startswith(prefix):
                st = path.stat()
                items.append(f"<Contents><Key>{escape(key)}</Key><Size>{st.st_size}</Size>"
                             f"<ETag>&quot;{st.st_mtime_ns:x}-{st.st_size:x}&quot;</ETag>"
                             f"<LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                             f"<StorageClass>STANDARD</StorageClass></Contents>")
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{self.server.bucket}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(items)}</KeyCount>"
                f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{''.join(items)}</ListBucketResult>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        if bucket != self.server.bucket:
            return self._error(404, "NoSuchBucket")
        query = parse_qs(parts.query)
        if not key and self.command == "GET":
            return self._list(query)
        path = self.server.root / key
        if not key or ".." in Path(key).parts or not path.is_file():
            return self._error(404, "NoSuchKey")
        st = path.stat()
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        if self.headers.get("If-Match") not in (None, etag):
            return self._error(412, "PreconditionFailed")
        start, end, status = 0, st.st_size - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else st.st_size - 1, st.st_size - 1)
            if start >= st.st_size:
                return self._error(416, "InvalidRange")
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "binary/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(st.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{st.st_size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.flush()
        with path.open("rb") as f:
            sent = 0
            while sent < length:
                n = os.sendfile(self.connection.fileno(), f.fileno(), start + sent, length - sent)
                if n == 0:
                    break
                sent += n

    do_GET = _serve
    do_HEAD = _serve


# ----------------------------------------------------------------------------- measurements


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_ceiling(device: str) -> dict[str, float]:
    """Host-to-device copy of 1 GiB (256 MiB on CPU): pinned and pageable source."""
    import torch

    n = (1 << 30) if device.startswith("cuda") else 256 * MiB
    dst = torch.empty(n, dtype=torch.uint8, device=device)
    out = {}
    for label, pinned in (("pinned", True), ("pageable", False)):
        src = torch.ones(n, dtype=torch.uint8, pin_memory=pinned and device.startswith("cuda"))
        dst.copy_(src, non_blocking=True)
        _sync(device)
        started = time.perf_counter()
        for _ in range(5):
            dst.copy_(src, non_blocking=True)
        _sync(device)
        out[f"h2d_{label}_gb_per_s"] = 5 * n / (time.perf_counter() - started) / 1e9
    return out


def timed(label: str, fn, total_bytes: int, repeats: int, device: str) -> dict:  # noqa: ANN001
    import torch

    runs = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        started = time.perf_counter()
        nbytes = fn()
        _sync(device)
        seconds = time.perf_counter() - started
        if nbytes != total_bytes:
            raise RuntimeError(f"{label}: loaded {nbytes} bytes, expected {total_bytes}")
        runs.append(seconds)
    best = min(runs)
    result = {"seconds": best, "gb_per_s": total_bytes / best / 1e9, "runs_s": [round(r, 3) for r in runs]}
    print(f"  {label:<44} {result['gb_per_s']:7.2f} GB/s  ({', '.join(f'{r:.2f}' for r in runs)} s)", flush=True)
    return result


def install_wheels(wheels: Path) -> None:
    target = Path(tempfile.mkdtemp(prefix="loader-gpu-site-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(target), *map(str, sorted(wheels.glob("*.whl")))], check=True)
    sys.path.insert(0, str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default=None, help="checkpoint size (default 4GB on CUDA, 256MB on CPU)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--wheels", type=Path, help="folder of wheels to install first (boto3, pydantic, ...)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "results")))
    parser.add_argument("--workdir", type=Path, default=None, help="where the checkpoint is written (default: TMPDIR)")
    args = parser.parse_args()
    started = time.monotonic()
    if args.wheels:
        install_wheels(args.wheels)

    import torch
    from safetensors.torch import load_file

    from loader.cli import parse_size
    from loader.config import LoaderConfig
    from loader.make_checkpoint import CheckpointSpec, make_checkpoint
    from loader.stream import LoadReport, stream_checkpoint

    cuda = torch.cuda.is_available()
    device = "cuda:0" if cuda else "cpu"
    size = parse_size(args.size or ("4GB" if cuda else "256MB"))
    print(f"device {device} ({torch.cuda.get_device_name(0) if cuda else 'no CUDA: CPU fallback'}), "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="loader-gpu-", dir=args.workdir))
    bucket_root = work / "bucket"
    ckpt = bucket_root / "model"
    make_checkpoint(ckpt, CheckpointSpec(total_bytes=size, shards=2, hidden=4096 if cuda else 1024))
    shards = sorted(ckpt.glob("*.safetensors"))
    tensor_bytes = sum(t.nbytes for p in shards for t in load_file(p).values())  # also fills the page cache
    print(f"checkpoint: {sum(p.stat().st_size for p in shards) / 1e9:.2f} GB in {len(shards)} shards "
          f"({time.monotonic() - started:.0f} s)", flush=True)
    results: dict[str, object] = {"device": device, "checkpoint_bytes": tensor_bytes, "cpus": os.cpu_count(),
                                  "torch": torch.__version__, **copy_ceiling(device)}
    print(f"  host-to-device ceiling: pinned {results['h2d_pinned_gb_per_s']:.2f} GB/s, "
          f"pageable {results['h2d_pageable_gb_per_s']:.2f} GB/s", flush=True)
    # direct_host_reads=False: on the CPU fallback, take the pinned-ring path the GPU run takes.
    config = LoaderConfig.from_env(concurrency=16 if cuda else 4, range_bytes=16 * MiB, memory_limit_bytes=512 * MiB,
                                   direct_host_reads=False)
    results["config"] = config.model_dump(mode="json")

    def warmscale(location: str):  # noqa: ANN202
        def run() -> int:
            report = LoadReport(location=location)
            for _ in stream_checkpoint(location, device, config, report=report):
                pass
            return report.bytes
        return run

    def load_file_then_to() -> int:
        n = 0
        for path in shards:
            for t in load_file(path).values():
                n += t.to(device).nbytes
        return n

    def load_file_direct() -> int:
        return sum(t.nbytes for p in shards for t in load_file(p, device=device).values())

    def runai(paths: list[str]):  # noqa: ANN202
        def run() -> int:
            from runai_model_streamer import SafetensorsStreamer

            n = 0
            with SafetensorsStreamer() as streamer:
                streamer.stream_files(paths)
                for _, t in streamer.get_tensors():
                    n += t.to(device).nbytes
            return n
        return run

    contenders = [("warmscale, page-cached file", warmscale(str(ckpt))),
                  ("load_file + .to(device), page-cached", load_file_then_to),
                  ("load_file(device=...), page-cached", load_file_direct)]
    try:
        import runai_model_streamer  # noqa: F401

        have_runai = True
    except ImportError:
        have_runai = False
        results["runai_model_streamer"] = "not installed: pass --wheels with runai-model-streamer(-s3)"
    if have_runai:
        contenders.append(("runai-model-streamer + .to(device), file", runai([str(p) for p in shards])))

    with RangeS3Server(bucket_root, "bench") as server:
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint_url,
                           "RUNAI_STREAMER_S3_ENDPOINT": server.endpoint_url,
                           "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0", "AWS_EC2_METADATA_DISABLED": "true"})
        contenders.append(("warmscale, loopback S3", warmscale("s3://bench/model")))
        if have_runai:
            contenders.append(("runai-model-streamer + .to(device), loopback S3",
                               runai([f"s3://bench/model/{p.name}" for p in shards])))
        measured: dict[str, dict] = {}
        for label, fn in contenders:
            if time.monotonic() - started > DEADLINE_S:
                print(f"  {label}: skipped (time budget spent)", flush=True)
                continue
            try:
                measured[label] = timed(label, fn, tensor_bytes, args.repeats, device)
            except Exception as exc:  # a baseline that cannot run here is reported, not fatal
                measured[label] = {"error": repr(exc)[:500]}
                print(f"  {label}: failed: {exc!r}"[:300], flush=True)
    results["measured"] = measured

    def gbps(label: str) -> float | None:
        return measured.get(label, {}).get("gb_per_s")

    ratios = {}
    pairs = {
        "warmscale_file_vs_pinned_ceiling": ("warmscale, page-cached file", None),
        "warmscale_file_vs_load_file_to": ("warmscale, page-cached file", "load_file + .to(device), page-cached"),
        "warmscale_file_vs_runai_file": ("warmscale, page-cached file", "runai-model-streamer + .to(device), file"),
        "warmscale_s3_vs_runai_s3": ("warmscale, loopback S3", "runai-model-streamer + .to(device), loopback S3"),
        "warmscale_s3_vs_load_file_to": ("warmscale, loopback S3", "load_file + .to(device), page-cached"),
    }
    for name, (a, b) in pairs.items():
        top = gbps(a)
        bottom = results["h2d_pinned_gb_per_s"] if b is None else gbps(b)
        if top and bottom:
            ratios[name] = round(top / bottom, 3)
    results["ratios"] = ratios
    results["seconds_total"] = round(time.monotonic() - started, 1)
    print("ratios:", json.dumps(ratios), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "loader_gpu" if cuda else "loader_gpu_cpu_fallback"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1))
    lines = [f"# {name}: {device}, {tensor_bytes / 1e9:.2f} GB", "",
             f"host-to-device ceiling: pinned {results['h2d_pinned_gb_per_s']:.2f} GB/s, pageable "
             f"{results['h2d_pageable_gb_per_s']:.2f} GB/s", "", "| contender | GB/s | runs (s) |", "|---|---|---|"]
    for label, r in measured.items():
        lines.append(f"| {label} | {r.get('gb_per_s', float('nan')):.2f} | {r.get('runs_s', r.get('error'))} |")
    lines += ["", "| ratio | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in ratios.items()]]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    print(f"done in {results['seconds_total']} s; wrote {args.out / name}.{{json,md}}")


if __name__ == "__main__":
    main()
