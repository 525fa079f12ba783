"""The controller's per-model tick with the API server faked: what it builds from a spec and what
it writes for a decision (the real API server is in tests/e2e)."""
from __future__ import annotations

import kubernetes
import pytest

from autoscaler.controller.loop import Controller, ControllerConfig
from autoscaler.metrics.resolver import MappingResolver


def _spec(**extra) -> dict:
    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "engine"}, "model": "m",
            "selector": {"matchLabels": {"app": "engine"}}, "minReplicas": 1, "maxReplicas": 8,
            "metrics": {"source": "direct"}}
    spec.update(extra)
    return spec


def _object(spec: dict, name: str = "engine") -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1}, "spec": spec}


@pytest.mark.parametrize("parameters, window", [({}, 60.0), ({"rateWindowSeconds": 5}, 5.0)])
def test_direct_sensor_rates_over_the_window_the_policy_is_configured_for(controller, parameters, window):
    model = controller._model(_object(_spec(policy={"parameters": parameters})))
    assert model.policy.config.rate_window_s == window
    assert model.sensor.builder.rate_window_s == window


class FakeScales:
    """The scale subresource of every target, in memory; counts reads and writes."""

    def __init__(self, replicas: int):
        from autoscaler.actuators.scale import Scale

        self._scale = Scale
        self.replicas: dict[str, int] = {}
        self.default = replicas
        self.reads: list[str] = []
        self.writes: list[tuple[str, int]] = []

    def read(self, ref):
        self.reads.append(ref.name)
        n = self.replicas.get(ref.name, self.default)
        return self._scale(n, n, "1")

    def write(self, ref, replicas, current=None):
        self.writes.append((ref.name, replicas))
        self.replicas[ref.name] = replicas
        return self._scale(replicas, replicas, "2")


def _fake_api(controller, replicas: int = 1) -> tuple[FakeScales, list]:
    scales, statuses = FakeScales(replicas), []
    controller.scales = scales
    controller.elector.is_leader = lambda: True
    controller._patch_status = lambda obj, status: statuses.append((obj["metadata"]["name"], status))
    controller._event = lambda *args: None
    return scales, statuses


def _pods(names: list[str]):
    from autoscaler.controller.pods import PodIndex, pod_info

    return PodIndex([pod_info({"metadata": {"name": f"{n}-0", "namespace": "ns", "labels": {"app": n}},
                               "spec": {"nodeName": "node"},
                               "status": {"phase": "Running", "podIP": "10.0.0.1",
                                          "conditions": [{"type": "Ready", "status": "True"}]}}) for n in names])


def _tick(controller, obj: dict, index, now: float) -> None:
    """One model's part of a tick: prepared from the pod cache, no scrape results (the resolver gives no URL)."""
    rnd = controller._prepare(obj, index)
    assert rnd.problem is None and not rnd.targets
    controller._tick_guarded(rnd, controller._read_metrics([rnd], now)[rnd.key], [], now)


def test_periodic_scale_rereads_of_many_models_are_spread_over_the_ticks(controller):
    names = [f"m{i}" for i in range(120)]
    objects = [_object(_spec(scaleTargetRef={"name": n}, selector={"matchLabels": {"app": n}}), n) for n in names]
    scales, _ = _fake_api(controller)
    index, t0 = _pods(names), 1_000_000.0
    per_tick = []
    for k in range(13):                      # 60 s of 5 s ticks; re-read period 30 s
        before = len(scales.reads)
        for obj in objects:
            _tick(controller, obj, index, t0 + 5 * k)
        per_tick.append(len(scales.reads) - before)
    assert per_tick[0] == len(names)         # the first tick reads every target
    later = per_tick[1:]
    assert sum(later) >= len(names)          # every target re-read at least once a period...
    assert max(later) <= len(names) / 6 * 2  # ...a sixth of them per tick, not all at once


def test_an_idle_model_writes_its_status_once_and_then_only_every_state_period(controller):
    scales, statuses = _fake_api(controller)
    obj, index, t0 = _object(_spec()), _pods(["engine"]), 1_000_000.0
    times = [t0 + 5 * k for k in range(int(controller.config.state_every_s * 2 / 5) + 1)]
    for t in times:
        _tick(controller, obj, index, t)
    assert not scales.writes
    assert 2 <= len(statuses) <= 3           # the first write, then one refresh per 300 s


def test_cached_modelautoscalers_drop_managed_fields_and_keep_the_rest():
    from autoscaler.controller.loop import _strip_managed_fields

    obj = _object(_spec())
    obj["metadata"]["managedFields"] = [{"manager": "warmscale", "fieldsV1": {"f:status": {}}}]
    obj["status"] = {"policyState": {"encoding": "json", "data": "{}"}}
    out = _strip_managed_fields(obj)
    assert "managedFields" not in out["metadata"] and out["metadata"]["uid"] == "uid-engine"
    assert out["status"] == {"policyState": {"encoding": "json", "data": "{}"}} and out["spec"] == _spec()


def test_the_cli_client_pools_a_connection_per_worker_and_keeps_the_kubeconfig_credentials(tmp_path):
    import yaml

    from autoscaler.controller.cli import _api_client

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "abc"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    client = _api_client(str(kubeconfig), workers=32)
    assert client.configuration.host == "https://127.0.0.1:6443"
    assert "Bearer abc" in client.configuration.api_key.values()
    assert client.rest_client.pool_manager.connection_pool_kw["maxsize"] == 40


class SlowMetricsServer:
    """Serves a vLLM metrics page per pod after a pause, and records how many requests overlapped."""

    def __init__(self, pause_s: float):
        import http.server
        import threading

        self.in_flight = self.most_in_flight = 0
        lock, server = threading.Lock(), self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                import time

                with lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(pause_s)
                with lock:
                    server.in_flight -= 1
                model = self.path.strip("/").split("/")[0]
                body = f'vllm:num_requests_waiting{{model_name="{model}"}} 3\n'.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_tick_scrapes_every_models_pods_in_one_round_not_model_by_model():
    """With more models than model workers, the scrapes of all models are in flight together (up
    to the scraper's pool), and each model decides on its own pod's sample."""
    server = SlowMetricsServer(pause_s=0.3)
    names = [f"m{i}" for i in range(24)]
    ctl = Controller(ControllerConfig(namespace="ns", interval_s=5.0, identity="unit", workers=4),
                     kubernetes.client.ApiClient(),
                     resolver=MappingResolver({f"{n}-0": f"{server.url}/{n}/metrics" for n in names}))
    try:
        _fake_api(ctl)
        index = _pods(names)
        rounds = [ctl._prepare(_object(_spec(model=n, scaleTargetRef={"name": n}, selector={"matchLabels": {"app": n}}), n),
                               index) for n in names]
        readings = ctl._read_metrics(rounds, 1_000_000.0)
        assert server.most_in_flight > ctl.config.workers
        assert set(readings) == {("ns", n) for n in names}
        assert readings[("ns", "m5")].observation.waiting_requests == 3 and readings[("ns", "m5")].observation.model == "m5"
    finally:
        ctl._scraper.close()
        ctl._pool.shutdown()
        server.close()


class FakePrometheus:
    """Answers PromQL `sum by (...)`-style queries from a table of series, and counts the queries."""

    def __init__(self, series: list[dict[str, str]]):
        self.series, self.queries = series, []

    def custom_query(self, query: str, timeout=None):
        self.queries.append(query)
        if query.startswith("max by") and "timestamp(" in query:
            value = 999_990.0
        elif "rate(" in query or "histogram_quantile" in query:
            value = 1.5
        else:
            value = 2.0
        by = query[query.index("(") + 1:query.index(")")].split(",")
        by = [b for b in by if b != "le"]
        out, seen = [], set()
        for labels in self.series:
            key = tuple(labels.get(b, "") for b in by)
            if "warmscale_router" in query and "model" not in labels:
                continue
            if key not in seen:
                seen.add(key)
                out.append({"metric": dict(zip(by, key)), "value": [0, str(value)]})
        return out


def test_prometheus_models_are_read_in_one_batch_and_narrowed_by_their_extra_labels(controller):
    from autoscaler.metrics.prometheus import PrometheusSensor

    controller.config.prometheus_url = "http://127.0.0.1:9"
    _fake_api(controller)
    fake = FakePrometheus([{"model_name": f"m{i}", "namespace": ns} for i in range(30) for ns in ("a", "b")]
                          + [{"model": "m3"}])
    sensor = controller._prom_sensors["60s"] = PrometheusSensor("http://127.0.0.1:9", rate_window="60s")
    sensor._prom = fake
    names = [f"m{i}" for i in range(30)]
    index = _pods(names)
    rounds = [controller._prepare(_object(_spec(model=n, scaleTargetRef={"name": n}, selector={"matchLabels": {"app": n}},
                                                 metrics={"source": "prometheus",
                                                          "prometheusLabels": {"namespace": "a"} if i % 2 else {}}), n),
                                  index) for i, n in enumerate(names)]
    readings = controller._read_metrics(rounds, 1_000_000.0)
    assert len(fake.queries) == 2 * 8 + 2          # a batch per label set, the router's once: not per model
    assert any("by (model_name,namespace)" in q for q in fake.queries)
    narrowed, whole = readings[("ns", "m1")].observation, readings[("ns", "m2")].observation
    assert narrowed.waiting_requests == 2.0 and whole.waiting_requests == 2.0 and whole.request_rate == 1.5
    assert readings[("ns", "m3")].observation.held_requests == 2.0 and whole.held_requests is None
    assert readings[("ns", "m1")].age_s == 10.0


def test_a_prometheus_label_name_that_promql_cannot_match_is_rejected():
    import pydantic

    from autoscaler.controller.spec import ModelAutoscalerSpec

    with pytest.raises(pydantic.ValidationError, match="prometheusLabels"):
        ModelAutoscalerSpec.model_validate(_spec(metrics={"source": "prometheus", "prometheusLabels": {"bad-name": "x"}}))
