"""The activator in local mode: a request the router holds for a model at zero wakes the loop, which
decides for that model at once (policy -> overrides, recorded as any decision) instead of at its
next policy interval; the regular schedule goes on. Engines here are echo engines (real processes
that answer at once), so what is timed is the decision path, not an engine's start."""
from __future__ import annotations

import asyncio
import sys
import threading
import time

import httpx
import pytest

from autoscaler.local.config import load_config
from autoscaler.local.runner import LocalRunner
from autoscaler.router.app import Router, build_app
from autoscaler.router.echo import echo_app
from autoscaler.router.endpoints import Endpoint, StaticEndpoints
from autoscaler.router.hold import HoldQueue, HoldSettings
from autoscaler.router.server import ThreadedServer, bind_socket
from tests.local.conftest import model_entry, write_config

INTERVAL_S = 60.0          # the policy's interval: without the poke a held request waits for the next one
ECHO = [sys.executable, "-m", "autoscaler.router.echo"]


def test_hold_queue_pokes_once_per_request_it_starts_holding():
    pokes: list[str] = []

    async def scenario():
        q = HoldQueue(HoldSettings(max_held=4, max_wait_s=5), on_hold=pokes.append)
        listed: list[Endpoint] = []
        waiting = [asyncio.create_task(q.wait("m", lambda: listed)) for _ in range(2)]
        await asyncio.sleep(0.05)
        seen = list(pokes)
        listed.append(Endpoint("a", "http://a"))
        q.notify("m")
        await asyncio.gather(*waiting)
        return seen

    assert asyncio.run(scenario()) == ["m", "m"]
    assert pokes == ["m", "m"]


def test_router_pokes_only_for_a_model_without_a_ready_engine():
    pokes: list[str] = []
    with ThreadedServer(echo_app("one"), bind_socket("127.0.0.1", 0)) as one:
        router = Router(StaticEndpoints({"up": [one.url], "zero": []}), HoldSettings(max_held=4, max_wait_s=0.2),
                        on_hold=pokes.append)
        with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
            served = httpx.post(rs.url + "/v1/completions", json={"model": "up", "max_tokens": 1}, timeout=10)
            held = httpx.post(rs.url + "/v1/completions", json={"model": "zero", "max_tokens": 1}, timeout=10)
    assert served.status_code == 200 and held.status_code == 503   # held past its 0.2 s bound
    assert pokes == ["zero"]


@pytest.fixture
def runner(tmp_path):
    settings = {"interval_s": INTERVAL_S, "idle_grace_s": 900}
    cfg = write_config(tmp_path / "local.yaml", state_dir=str(tmp_path / "state"),
                       router={"port": 0, "hold": {"max_held": 8, "max_wait_s": 30}},
                       models=[model_entry(tmp_path, command=ECHO, min_replicas=0, max_replicas=1,
                                           start_timeout_s=60, policy={"settings": settings})])
    r = LocalRunner(load_config(cfg))
    r.open()
    r.start()
    yield r
    r.stop(drain_s=5)


def _wait(what, predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _post(r, out: list):
    t0 = time.time()
    resp = httpx.post(f"{r.router_url}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2},
                      timeout=40)
    out.append((t0, resp.status_code, time.time() - t0))


def test_a_request_held_at_zero_orders_an_engine_within_a_fraction_of_the_interval(runner):
    state = runner.state
    _wait("the first decision (at zero)", lambda: state.decision_count("tiny") >= 1, 20)
    first = state.decisions("tiny", 1)[0]
    assert first.desired == 0 and str(first.reason) == "hold_at_zero"
    time.sleep(0.5)   # well inside the 60 s interval: the next regular decision is ~60 s away

    results: list = []
    clients = [threading.Thread(target=_post, args=(runner, results)) for _ in range(2)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(45)
    sent = min(t0 for t0, _, _ in results)
    assert [status for _, status, _ in results] == [200, 200]

    pokes = state.events("tiny", "activator_poke")
    started = state.events("tiny", "engine_started")
    decisions = sorted(state.decisions("tiny", 10), key=lambda d: d.time)
    # one out-of-schedule decision for both held requests (the second found an engine starting, or
    # was held before the loop woke), through the policy: activation, not a hard-coded +1
    assert len(pokes) == 1 and pokes[0]["held"] in (1, 2)
    poked = [d for d in decisions if d.time == pokes[0]["time"]]
    assert len(poked) == 1 and poked[0].desired == 1
    assert "activate:" in poked[0].detail and f"waiting={pokes[0]['held']:.2f}" in poked[0].detail
    assert len(started) == 1
    order_s = started[0]["time"] - sent
    # the order follows the held request by well under a second, against up to 60 s on the schedule
    assert 0.0 <= poked[0].time - sent < 1.0 and order_s < 1.5, (poked[0].time - sent, order_s)
    assert max(took for _, _, took in results) < 20.0
    # the regular schedule went on: no other decision than the first and the poke's so far
    assert [d.time for d in decisions] == [first.time, poked[0].time]
    assert runner.models["tiny"].next_decision_at == pytest.approx(first.time + INTERVAL_S)
