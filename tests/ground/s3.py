"""A real S3-compatible server (versitygw over a POSIX directory) on loopback."""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config

from tests.ground.binaries import binary
from tests.ground.procs import ManagedProcess, free_port


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"
    root_dir: Path = field(default=Path("."))

    def client(self, **config: object):
        """A boto3 S3 client pointed at this server (path-style addressing, no retries by default)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"},
                          max_pool_connections=64, **config))

    def env(self) -> dict[str, str]:
        """Environment variables that make the standard AWS credential chain find this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
                "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ENDPOINT_URL_S3": self.endpoint_url}


@contextlib.contextmanager
def start_s3_server(workdir: Path, bucket: str = "warmscale-test") -> Iterator[S3Server]:
    """Start versitygw serving `workdir/data` on a free loopback port with fresh credentials and one bucket."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = S3Server(endpoint_url=f"http://127.0.0.1:{port}", access_key="ws" + secrets.token_hex(8),
                      secret_key=secrets.token_hex(20), bucket=bucket, root_dir=data_dir)
    argv = [binary("versitygw"), "--access", server.access_key, "--secret", server.secret_key,
            "--region", server.region, "--port", f"127.0.0.1:{port}", "posix", str(data_dir)]
    with ManagedProcess("versitygw", argv, workdir / "logs", ports=[port]) as proc:
        client = server.client()
        proc.wait_until(lambda: client.list_buckets() is not None, timeout_s=30,
                        how_to_fix="run versitygw by hand with the command above to see why it fails")
        client.create_bucket(Bucket=bucket)
        yield server
