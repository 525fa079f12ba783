"""The router without engines: least-loaded choice, the hold queue's bounds, and the HTTP side in front
of echo upstreams (real HTTP servers on loopback that answer at once)."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.contract import ROUTER_ARRIVALS, ROUTER_HELD_REQUESTS, ROUTER_REJECTED
from autoscaler.router.app import Router, build_app
from autoscaler.router.balance import LoadTracker
from autoscaler.router.echo import echo_app
from autoscaler.router.endpoints import Endpoint, StaticEndpoints
from autoscaler.router.hold import HoldQueue, HoldRejected, HoldSettings
from autoscaler.router.server import PortInUse, ThreadedServer, bind_socket

A, B, C = Endpoint("a", "http://a"), Endpoint("b", "http://b"), Endpoint("c", "http://c")


# ---------------------------------------------------------------------------- routing choice
def test_choice_is_the_least_loaded_by_own_inflight():
    t = LoadTracker()
    t.started("a"), t.started("a"), t.started("b")
    assert t.choose([A, B, C]) == C
    t.started("c"), t.started("c")
    assert t.choose([A, B, C]) == B


def test_scraped_load_from_others_counts_beyond_own_inflight():
    t = LoadTracker()
    t.started("a")
    # b has 5 requests running that this router did not send; a has only ours
    t.scraped("a", running_plus_waiting=1, inflight_at_scrape=1)
    t.scraped("b", running_plus_waiting=5, inflight_at_scrape=0)
    assert t.load("a") == 1 and t.load("b") == 5
    assert t.choose([A, B]) == A
    # a scrape that lags our own count never goes negative
    t.scraped("a", running_plus_waiting=0, inflight_at_scrape=1)
    assert t.load("a") == 1


def test_ties_rotate_instead_of_piling_on_one_engine():
    t = LoadTracker()
    picks = [t.choose([A, B, C]).id for _ in range(6)]
    assert set(picks) == {"a", "b", "c"}


def test_finished_releases_and_forget_drops_idle_engines():
    t = LoadTracker()
    t.started("a"), t.finished("a"), t.finished("a")
    assert t.inflight("a") == 0
    t.started("b")
    t.forget(keep=set())
    assert t.inflight("b") == 1 and t.load("a") == 0   # b still has a request in flight: kept


def test_choosing_among_no_engines_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        LoadTracker().choose([])


# ---------------------------------------------------------------------------- hold queue
def test_held_request_gets_the_engine_when_one_is_listed():
    async def scenario():
        q = HoldQueue(HoldSettings(max_held=4, max_wait_s=5))
        listed: list[Endpoint] = []
        task = asyncio.create_task(q.wait("m", lambda: listed))
        await asyncio.sleep(0.05)
        assert q.held("m") == 1
        listed.append(A)
        q.notify("m")
        endpoints, held_s = await task
        return endpoints, held_s, q.held("m")

    endpoints, held_s, held_after = asyncio.run(scenario())
    assert endpoints == [A] and 0.04 <= held_s < 1.0 and held_after == 0


def test_hold_past_max_wait_is_rejected_near_the_bound():
    async def scenario():
        q = HoldQueue(HoldSettings(max_held=4, max_wait_s=0.3))
        t0 = time.monotonic()
        with pytest.raises(HoldRejected, match="max_wait_s 0.3") as info:
            await q.wait("m", lambda: [])
        return time.monotonic() - t0, info.value.held_s, q.held("m")

    elapsed, held_s, held_after = asyncio.run(scenario())
    assert 0.3 <= elapsed < 0.8 and held_s >= 0.3 and held_after == 0


def test_hold_queue_full_rejects_at_once_and_per_model():
    async def scenario():
        q = HoldQueue(HoldSettings(max_held=2, max_wait_s=5))
        waiting = [asyncio.create_task(q.wait("m", lambda: [])) for _ in range(2)]
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(HoldRejected, match="max_held 2"):
            await q.wait("m", lambda: [])
        rejected_in = time.monotonic() - t0
        other = asyncio.create_task(q.wait("other", lambda: [A]))   # another model has its own bound
        got = await other
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return rejected_in, got, q.held("m")

    rejected_in, got, held_after = asyncio.run(scenario())
    assert rejected_in < 0.05 and got[0] == [A] and held_after == 0


def test_hold_settings_reject_unknown_keys_and_negative_bounds():
    with pytest.raises(ValueError, match="max_wait"):
        HoldSettings(max_wait=3)
    with pytest.raises(ValueError, match="max_held"):
        HoldSettings(max_held=-1)


# ---------------------------------------------------------------------------- HTTP side
@pytest.fixture
def echo_pair():
    with ThreadedServer(echo_app("one"), bind_socket("127.0.0.1", 0)) as one, \
            ThreadedServer(echo_app("two"), bind_socket("127.0.0.1", 0)) as two:
        yield one, two


def _metric(text: str, name: str, model: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels.get("model") == model:
                return s.value
    return None


def test_router_spreads_streams_over_engines_and_counts_arrivals(echo_pair):
    one, two = echo_pair
    router = Router(StaticEndpoints({"m": [one.url, two.url]}))
    with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
        engines = []
        for _ in range(4):
            with httpx.stream("POST", rs.url + "/v1/chat/completions",
                              json={"model": "m", "max_tokens": 2, "stream": True}, timeout=10) as r:
                lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
            assert r.status_code == 200 and lines[-1] == "data: [DONE]"
            engines.append(lines[0])
        plain = httpx.post(rs.url + "/v1/completions", json={"model": "m", "max_tokens": 3}, timeout=10).json()
        models = httpx.get(rs.url + "/v1/models").json()
        text = httpx.get(rs.url + "/metrics").text
    assert {'"engine": "one"' in e for e in engines} == {True, False}   # both engines got streams
    assert plain["choices"][0]["text"] == "xxx"
    assert [m["id"] for m in models["data"]] == ["m"]
    assert _metric(text, ROUTER_ARRIVALS, "m") == 5.0
    assert router.inflight("m/0") == 0 and router.inflight("m/1") == 0


def test_router_skips_an_engine_that_refuses_connections(echo_pair):
    one, _ = echo_pair
    dead = bind_socket("127.0.0.1", 0)
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()   # nothing listens there now
    router = Router(StaticEndpoints({"m": [dead_url, one.url]}))
    with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
        answers = [httpx.post(rs.url + "/v1/completions", json={"model": "m"}, timeout=10) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]


def test_router_holds_until_an_engine_is_listed(echo_pair):
    one, _ = echo_pair
    source = StaticEndpoints({"m": []})
    router = Router(source, HoldSettings(max_held=8, max_wait_s=10))
    with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
        with httpx.Client(timeout=15) as client:
            import threading
            result = {}
            thread = threading.Thread(target=lambda: result.setdefault(
                "r", client.post(rs.url + "/v1/completions", json={"model": "m", "max_tokens": 1})))
            thread.start()
            deadline = time.monotonic() + 5
            while router.held("m") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            held_text = httpx.get(rs.url + "/metrics").text
            source.set("m", [one.url])
            router.notify_threadsafe("m")
            thread.join(10)
    assert _metric(held_text, ROUTER_HELD_REQUESTS, "m") == 1.0
    assert result["r"].status_code == 200 and router.held("m") == 0


def test_router_answers_503_with_retry_after_past_the_wait_bound():
    router = Router(StaticEndpoints({"m": []}), HoldSettings(max_held=8, max_wait_s=0.3, retry_after_s=7))
    with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
        r = httpx.post(rs.url + "/v1/completions", json={"model": "m"}, timeout=10)
        text = httpx.get(rs.url + "/metrics").text
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert "max_wait_s 0.3" in r.json()["error"]["message"]
    assert _metric(text, ROUTER_REJECTED, "m") == 1.0


@pytest.mark.parametrize("body, status, words", [
    (b"not json", 400, "JSON object"),
    (b'{"prompt": "x"}', 400, "'model'"),
    (b'{"model": "nope"}', 404, "'nope' is not served here; served: m"),
])
def test_router_bad_requests_name_the_problem(body, status, words):
    router = Router(StaticEndpoints({"m": []}))
    with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
        r = httpx.post(rs.url + "/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and words in r.json()["error"]["message"]
    assert router.arrivals_total("m") == 0


def test_a_port_in_use_is_an_error_naming_it():
    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        taken.close()


class _BreakingUpstream:
    """A loopback HTTP upstream that breaks the first `breaks` connections as soon as a request starts
    to arrive, then answers 200. `how`: "close" (a kept-alive connection the engine dropped) or "reset"
    (an RST while the router is still writing the body)."""

    def __init__(self, breaks: int, how: str):
        import socket
        import threading

        self.breaks, self.how, self.requests = breaks, how, 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import struct

        body = b'{"choices": [{"text": "ok"}]}'
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                if not conn.recv(65536):
                    continue
                self.requests += 1
                if self.requests <= self.breaks:
                    if self.how == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                _read_request(conn)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self._sock.close()


def _read_request(conn) -> None:
    """Read the rest of a request whose first bytes were read (so closing it sends no RST)."""
    conn.settimeout(0.5)
    try:
        while conn.recv(1 << 20):
            pass
    except TimeoutError:
        pass


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("breaks, status", [(1, 200), (3, 502)])
def test_a_connection_broken_before_any_answer_is_sent_again(breaks, status, how):
    upstream = _BreakingUpstream(breaks, how)
    router = Router(StaticEndpoints({"m": [upstream.url]}))
    # a body of 4 MiB is still being written when the reset comes
    prompt = "x" * (4 << 20) if how == "reset" else "x"
    try:
        with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
            answer = httpx.post(rs.url + "/v1/completions", json={"model": "m", "prompt": prompt}, timeout=10)
    finally:
        upstream.close()
    assert answer.status_code == status
    assert upstream.requests == min(breaks + 1, 3)     # sent again at most twice
    if status == 502:
        assert "3 tries without an answer" in answer.json()["error"]["message"]
    assert router.inflight("m/0") == 0


def test_resends_after_broken_connections_go_to_other_engines_and_are_bounded():
    upstreams = [_BreakingUpstream(1, "close") for _ in range(4)]
    router = Router(StaticEndpoints({"m": [u.url for u in upstreams]}))
    try:
        with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
            answer = httpx.post(rs.url + "/v1/completions", json={"model": "m"}, timeout=10)
    finally:
        for u in upstreams:
            u.close()
    # every engine breaks its first connection: three tries (one send, two resends), each to an engine
    # not tried yet, then a 502 naming them
    assert answer.status_code == 502
    assert sorted(u.requests for u in upstreams) == [0, 1, 1, 1]
    assert "3 tries without an answer" in answer.json()["error"]["message"]


def test_an_engine_that_does_not_connect_in_time_is_left_for_another():
    import socket

    # a listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs
    blackhole = socket.create_server(("127.0.0.1", 0), backlog=0)
    queued = [socket.create_connection(blackhole.getsockname())]   # Linux queues backlog + 1
    good = _BreakingUpstream(0, "close")
    stalled = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    router = Router(StaticEndpoints({"m": [stalled, good.url]}), connect_timeout_s=0.5)
    try:
        with ThreadedServer(build_app(router), bind_socket("127.0.0.1", 0)) as rs:
            answers = [httpx.post(rs.url + "/v1/completions", json={"model": "m"}, timeout=10) for _ in range(2)]
    finally:
        good.close(), blackhole.close(), [q.close() for q in queued]
    # ties rotate, so one of the two requests tries the stalled engine first, then the good one
    assert [a.status_code for a in answers] == [200, 200]
    assert good.requests == 2


def test_served_connections_send_small_writes_at_once():
    """asyncio turns Nagle off (TCP_NODELAY) only for connections of a socket made with IPPROTO_TCP;
    a connection accepted on ours has it off whatever the event loop."""
    import socket
    from asyncio.base_events import _set_nodelay   # what asyncio's server calls on each accepted connection

    listener = bind_socket("127.0.0.1", 0)
    try:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        with client, conn:
            _set_nodelay(conn)
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        listener.close()
