"""`warmscale local` over real vLLM CPU engines (the tiny model): hold at zero, the hold bound, a killed
engine replaced, a burst scaled up, a scale-down that loses no stream, back down after the burst.

One runner for the module (each engine start costs ~40-90 s on a 2-core machine); the tests run in
file order and each leaves the fleet as the next expects.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from autoscaler.local.config import load_config
from autoscaler.local.runner import LocalRunner
from tests.local.conftest import model_entry, write_config

pytestmark = pytest.mark.integration

START_S = 300   # an engine start on a busy 2-core machine
LONG_STREAM = 1900  # tokens: a generation that fills most of the context (2048)


@pytest.fixture(scope="module")
def runner(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    settings = {"interval_s": 1, "stable_window_s": 20, "panic_window_s": 4, "rate_window_s": 10,
                "idle_grace_s": 900, "burst_hold_s": 0, "scale_down_period_s": 0}
    cfg = write_config(tmp / "local.yaml", state_dir="state", router={"port": 0, "hold": {"max_held": 2,
                       "max_wait_s": START_S, "retry_after_s": 5}},
                       models=[model_entry(tiny_model_dir, max_replicas=2, drain_timeout_s=120,
                                           policy={"settings": settings})])
    r = LocalRunner(load_config(cfg))
    r.open()
    r.start()
    yield r
    r.stop(drain_s=10)


def _wait(what, predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _counts(r):
    return r.models["tiny"].supervisor.counts()


def _complete(r, max_tokens=8, timeout_s=START_S + 60):
    return httpx.post(f"{r.router_url}/v1/completions", timeout=timeout_s,
                      json={"model": "tiny", "prompt": [5, 6, 7, 8], "max_tokens": max_tokens, "ignore_eos": True,
                            "temperature": 0.0})


def _stream(r, max_tokens: int, prompt_len: int = 64) -> dict:
    body = {"model": "tiny", "prompt": list(range(3, 3 + prompt_len)), "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0.0, "stream_options": {"include_usage": True}}
    usage, done, error = None, False, None
    with httpx.stream("POST", f"{r.router_url}/v1/completions", json=body, timeout=START_S) as resp:
        status = resp.status_code
        if status != 200:
            error = resp.read().decode(errors="replace")[:500]
        for line in resp.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and json.loads(line[6:]).get("usage"):
                usage = json.loads(line[6:])["usage"]
    return {"status": status, "done": done, "tokens": usage and usage["completion_tokens"], "error": error}


def test_scaled_to_zero_holds_first_requests_and_rejects_past_the_bound(runner):
    assert _counts(runner)["ready"] == 0 and _counts(runner)["starting"] == 0
    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(_complete, runner) for _ in range(2)]
        _wait("two held requests", lambda: runner.router.held("tiny") == 2, 30)
        t0 = time.monotonic()
        third = _complete(runner)
        rejected_in = time.monotonic() - t0
        answers = [f.result() for f in held]
    assert third.status_code == 503 and third.headers["retry-after"] == "5" and rejected_in < 2
    assert "max_held 2" in third.json()["error"]["message"]
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.json()["usage"]["completion_tokens"] == 8 for a in answers)
    assert runner.router.arrivals_total("tiny") == 3
    reasons = [d.reason for d in runner.state.decisions("tiny", 1000)]
    assert "activate_from_zero" in reasons


def _settle_at_one(sup):
    """One Ready engine and nothing else (held requests may have ordered a second one; the stable
    window takes it back, a starting one first)."""
    _wait("one engine, Ready, and no other", lambda: sup.desired == 1 and len(sup.engines) == 1
          and len(sup.ready()) == 1, START_S)


def test_killed_engine_is_detected_and_replaced(runner):
    sup = runner.models["tiny"].supervisor
    _settle_at_one(sup)
    victim = sup.ready()[0]
    before = set(sup.engines.copy())
    restarts = sup.restarts
    os.killpg(victim.pid, signal.SIGKILL)
    _wait("the crash counted", lambda: sup.restarts == restarts + 1, 30)
    # replaced in the round that saw the crash (the count is read mid-round, so wait that round out)
    _wait("a replacement started", lambda: victim.id not in sup.engines.copy() and len(sup.engines) == 1, 5)
    _wait("a replacement ready", lambda: any(e.id not in before for e in sup.ready()), START_S)
    assert _complete(runner).status_code == 200
    assert runner.state.restarts("tiny") == restarts + 1
    assert [e["engine"] for e in runner.state.events("tiny", "engine_crashed")] == [victim.id]


def _keep_streaming(runner, clients: int, max_tokens: int, stop: threading.Event) -> list:
    """`clients` clients, each streaming one long generation after another until `stop`; returns
    their futures' results (every stream's outcome). Long generations keep max_num_seqs busy and a
    queue behind them however fast the machine is."""
    def client():
        outcomes = []
        while not stop.is_set():
            outcomes.append(_stream(runner, max_tokens=max_tokens))
        return outcomes

    pool = ThreadPoolExecutor(clients)
    return pool, [pool.submit(client) for _ in range(clients)]


def test_burst_orders_a_second_engine_and_idle_takes_it_back(runner):
    sup = runner.models["tiny"].supervisor
    _settle_at_one(sup)
    stop = threading.Event()
    # twice max_num_seqs (4) in flight: 4 running, 4 waiting behind generations of ~2k tokens
    pool, clients = _keep_streaming(runner, 8, LONG_STREAM, stop)
    try:
        _wait("a second engine ordered and started", lambda: sup.desired == 2 and len(sup.engines) == 2, 120)
    finally:
        stop.set()
        outcomes = [o for f in clients for o in f.result()]
        pool.shutdown()
    assert outcomes and all(o["status"] == 200 and o["done"] for o in outcomes), [o for o in outcomes if o["error"]]
    ups = [d for d in runner.state.decisions("tiny", 5000) if d.desired == 2 and d.current == 1]
    assert ups and max(ups[-1].explain.need.values()) > 1.0, ups[-1]
    # idle again: back to one engine after the stable window (20 s here); a starting engine goes first
    _wait("back down to one engine", lambda: sup.desired == 1 and len(sup.engines) == 1, 180)
    downs = [d for d in runner.state.decisions("tiny", 5000) if d.desired < d.current]
    assert downs and str(downs[0].reason) == "scale_down_stable"


def _pin(runner, name: str, replicas: int):
    from autoscaler.contract import OverrideKind
    from autoscaler.overrides import ScalingOverride

    now = datetime.now(timezone.utc)
    runner._overrides[0].create(ScalingOverride(
        namespace="default", name=name, target="tiny", kind=OverrideKind.PIN, replicas=replicas,
        expires_at=now + timedelta(minutes=10), reason=f"test: pin {replicas}", author="test", created_at=now))


def _events_since(runner, kind: str, since: float) -> list[dict]:
    return [e for e in runner.state.events("tiny", kind) if e["time"] >= since]


def _drained(runner, serving: set[str], since: float) -> list[dict]:
    return [e for e in _events_since(runner, "engine_draining", since) if e["engine"] in serving]


def test_scale_down_loses_no_streamed_request(runner):
    sup = runner.models["tiny"].supervisor
    _pin(runner, "pin-two", 2)
    _wait("two ready engines", lambda: len(sup.ready()) == 2, START_S)
    stop = threading.Event()
    streaming_from = time.time()    # pin-two holds two engines from here until pin-one replaces it
    pool, clients = _keep_streaming(runner, 8, LONG_STREAM, stop)
    try:
        # at least two streams on each engine, so the one drained still has one when its drain is
        # ordered even if the machine stalls the clients that would start the next ones
        _wait("streams on both engines", lambda: all(runner.router.inflight(e.id) >= 2 for e in sup.ready()), 60)
        serving = {e.id for e in sup.ready()}
        ordered_at = time.time()
        runner._overrides[0].delete("default", "pin-two")
        _pin(runner, "pin-one", 1)
        _wait("a serving engine draining", lambda: _drained(runner, serving, ordered_at), 30)
    finally:
        stop.set()
        outcomes = [o for f in clients for o in f.result()]
        pool.shutdown()
    # every stream, those on the drained engine included, ran to its end
    assert all(o["status"] == 200 and o["done"] and o["tokens"] == LONG_STREAM for o in outcomes), outcomes
    _wait("the drained engine stopped", lambda: len(sup.engines) == 1, 120)
    # (a tick between the delete and the new pin may have started a third engine under the streams;
    # pin-one stops that one first, so the proof looks at the serving engine that was drained)
    drained = _drained(runner, serving, ordered_at)
    stopping = [e for e in _events_since(runner, "engine_stopping", ordered_at) if e["engine"] == drained[0]["engine"]]
    assert drained[0]["inflight"] > 0, drained       # it had streams to finish
    assert stopping and stopping[-1]["drained"] is True, stopping
    # the scale-down was ordered only once pin-two was gone: by pin-one, or by the policy itself if a
    # tick read the overrides between the delete and the new pin (both are scale-downs under live
    # streams). While pin-two held, every decision said 2. (A decision's time is its tick's start,
    # which on a stalled machine can be seconds before the tick read the overrides.)
    downs = [d for d in runner.state.decisions("tiny", 5000) if d.time >= streaming_from and d.desired < d.current]
    assert downs and downs[0].desired == 1, downs
    assert (str(downs[0].reason), downs[0].explain.override) in (("override_pin", "pin-one"),
                                                                  ("scale_down_stable", None)), downs
    runner._overrides[0].delete("default", "pin-one")
