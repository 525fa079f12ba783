"""A real Prometheus with a generated config, a 1 s scrape interval (or another) and targets that can be added live."""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.ground.procs import ManagedProcess, free_port, require_executable

CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: 1s
scrape_configs:
  - job_name: ground
    scrape_interval: {interval}
    scrape_timeout: 900ms
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 1s
"""


@dataclass
class Prometheus:
    url: str
    targets_file: Path

    def add_target(self, address: str, **labels: str) -> None:
        """Scrape `address` (host:port on loopback) from now on; takes effect within about a second."""
        if not address.startswith(("127.", "localhost")):
            raise ValueError(f"refusing to scrape non-loopback address {address!r}")
        groups = json.loads(self.targets_file.read_text())
        groups.append({"targets": [address], "labels": labels})
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for_series(self, promql: str, timeout_s: float = 30, predicate=lambda value: True) -> list[dict]:
        """Poll `promql` until it returns a series whose value satisfies `predicate`; return the result."""
        deadline = time.monotonic() + timeout_s
        last: list[dict] = []
        while time.monotonic() < deadline:
            last = self.query(promql)
            if any(predicate(float(series["value"][1])) for series in last):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"no series for {promql!r} matched within {timeout_s} s; last result: {last}")


@contextlib.contextmanager
def start_prometheus(workdir: Path, scrape_interval_s: float = 1.0) -> Iterator[Prometheus]:
    exe = require_executable("prometheus", "install Debian's package: apt-get install prometheus (hack/setup.sh does it)")
    workdir.mkdir(parents=True, exist_ok=True)
    targets = workdir / "targets.json"
    targets.write_text("[]")
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG.format(targets=targets, interval=f"{round(scrape_interval_s * 1000)}ms"))
    port = free_port()
    argv = [exe, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"]
    with ManagedProcess("prometheus", argv, workdir / "logs", ports=[port]) as proc:
        url = f"http://127.0.0.1:{port}"
        proc.wait_until(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, timeout_s=30)
        yield Prometheus(url=url, targets_file=targets)
