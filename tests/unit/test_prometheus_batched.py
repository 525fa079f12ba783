"""The batched Prometheus read against a slow loopback Prometheus: its queries are all in flight at
once, and one failed query fails every model's read with a reason that names it."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from autoscaler.metrics.prometheus import FleetRead, PrometheusSensor

DELAY_S = 0.4


class _SlowPrometheus(BaseHTTPRequestHandler):
    """/api/v1/query after DELAY_S: an empty vector, or a 400 for a query containing `fail_on`."""
    fail_on: str | None = None
    queries: list[str] = []

    def _answer(self, query: str) -> None:
        type(self).queries.append(query)
        time.sleep(DELAY_S)
        if self.fail_on and self.fail_on in query:
            status, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        else:
            status, body = 200, {"status": "success", "data": {"resultType": "vector", "result": []}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):   # noqa: N802 - http.server's name
        self._answer(parse_qs(urlparse(self.path).query).get("query", [""])[0])

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        self._answer(parse_qs(self.rfile.read(length).decode()).get("query", [""])[0])

    def log_message(self, *_):
        pass


@pytest.fixture
def slow_prometheus():
    _SlowPrometheus.queries, _SlowPrometheus.fail_on = [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _SlowPrometheus
    server.shutdown()


READS = [FleetRead("a", (), 1, 0), FleetRead("b", (("namespace", "llm"),), 2, 0)]


def test_the_queries_of_a_batched_read_are_in_flight_together(slow_prometheus):
    url, handler = slow_prometheus
    t0 = time.monotonic()
    readings = PrometheusSensor(url, timeout_s=5).observe_many(READS, time.time())
    took = time.monotonic() - t0
    assert len(handler.queries) >= 10
    assert took < 0.5 * DELAY_S * len(handler.queries), (took, len(handler.queries))
    assert len(readings) == 2


def test_one_failed_query_fails_every_read_and_names_the_query(slow_prometheus):
    url, handler = slow_prometheus
    handler.fail_on = "histogram_quantile"
    readings = PrometheusSensor(url, timeout_s=5).observe_many(READS, time.time())
    assert all(any("rejected" in why and "histogram_quantile" in why for why in r.reasons) for r in readings)
