"""The router's cluster parts without an API server: engine URLs from pods, and the poke writer's
rate limit (the real API server is in tests/e2e/test_router.py)."""
from __future__ import annotations

import time

import kubernetes
import pytest

from autoscaler.controller.pods import pod_info
from autoscaler.router.activation import ActivationWriter
from autoscaler.router.kube import Route, check_engine_url_template, engine_url


def _pod(ip: str | None) -> object:
    return pod_info({"metadata": {"name": "engine-0", "namespace": "llm"}, "status": {"podIP": ip}})


def test_an_engine_is_reached_on_its_pod_ip_and_port_unless_a_template_says_otherwise():
    assert engine_url(_pod("10.1.2.3"), 8000) == "http://10.1.2.3:8000"
    assert engine_url(_pod("fd00::5"), 8000) == "http://[fd00::5]:8000"
    assert engine_url(_pod(None), 8000) is None, "no IP yet: not an engine yet"
    template = "http://127.0.0.1:9400/pods/{namespace}/{name}/"
    assert engine_url(_pod(None), 8000, template) == "http://127.0.0.1:9400/pods/llm/engine-0"


@pytest.mark.parametrize("template, words", [("http://{host}:80", "only {name}"), ("ftp://{ip}", "http://")])
def test_a_template_that_cannot_work_is_refused_naming_why(template, words):
    with pytest.raises(ValueError, match=words.replace("{", "\\{").replace("}", "\\}")):
        check_engine_url_template(template)


class _Custom:
    def __init__(self):
        self.patches: list[tuple[str, dict]] = []

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body, **kw):
        self.patches.append((name, body))


def test_a_burst_of_held_requests_costs_one_write_per_interval_and_the_last_held_count():
    routes = {"m": (Route("llm", "ma-1", "m", (), 8000), Route("llm", "ma-2", "m", (), 8000))}
    held = {"m": 0}
    writer = ActivationWriter(kubernetes.client.ApiClient(), lambda m: routes.get(m, ()), lambda m: held[m],
                              "router-0", min_interval_s=0.5)
    custom = writer._custom = _Custom()
    writer.start()
    try:
        for n in range(1, 6):
            held["m"] = n
            writer.request("m")
        deadline = time.monotonic() + 0.3
        while len(custom.patches) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        first = list(custom.patches)
        time.sleep(0.1)
        assert len(custom.patches) == 2, "one write per ModelAutoscaler of the model, however many were held"
        held["m"] = 9
        writer.request("m")
        deadline = time.monotonic() + 2
        while len(custom.patches) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.stop()
    assert [name for name, _ in first] == ["ma-1", "ma-2"]
    assert len(custom.patches) == 4, "a later hold writes again once the interval has passed"
    assert custom.patches[-1][1]["status"]["activation"]["heldRequests"] == 9
    assert custom.patches[-1][1]["status"]["activation"]["router"] == "router-0"


@pytest.mark.parametrize("argv, code, words", [
    (["router"], 2, "--namespace is required"),
    (["router", "--namespace", "llm", "--engine-url-template", "http://{host}"], 2, "only {name}"),
    (["router", "--namespace", "llm", "--max-held", "-1"], 2, "--max-held"),
    (["router", "--namespace", "llm", "--kubeconfig", "/nonexistent/kubeconfig"], 3, "/nonexistent/kubeconfig"),
])
def test_the_router_command_names_what_is_wrong_with_its_exit_code(argv, code, words, capsys, monkeypatch):
    from autoscaler.cli import main

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_the_router_command_exits_4_when_the_api_server_cannot_be_reached(tmp_path, capsys):
    import yaml

    from autoscaler.cli import main
    from tests.ground.procs import free_port

    server = f"http://127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    assert main(["router", "--namespace", "llm", "--kubeconfig", str(kubeconfig)]) == 4
    err = capsys.readouterr().err
    assert "unreachable" in err and server in err and "Traceback" not in err


def test_a_held_request_pokes_only_while_no_engine_is_on_its_way():
    from autoscaler.router.cluster import ClusterRouter

    router = ClusterRouter(kubernetes.client.ApiClient(), "llm", host="127.0.0.1", port=0)
    requested: list[str] = []
    router.activations.request = requested.append
    try:
        router.endpoints._starting = {"m": 1}
        router._poke("m")
        assert requested == [], "a pod is starting: the controller already acted"
        router.endpoints._starting = {}
        router._poke("m")
        assert requested == ["m"]
    finally:
        router._server.stop()


def _raw_pod(name: str, app: str, ready: bool, ip: str = "10.0.0.9") -> dict:
    return {"metadata": {"name": name, "namespace": "llm", "labels": {"app": app}}, "spec": {"nodeName": "node"},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _raw_ma(name: str, model: str, app: str) -> dict:
    return {"metadata": {"name": name, "namespace": "llm"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}, "model": model,
                     "selector": {"matchLabels": {"app": app}}, "metrics": {"port": 9000}}}


def test_each_model_is_served_by_the_ready_pods_of_its_autoscalers_selectors():
    from autoscaler.controller.reflector import object_key
    from autoscaler.router.kube import ClusterEndpoints, _route

    changes: list[bool] = []
    endpoints = ClusterEndpoints(kubernetes.client.ApiClient(), "llm", on_change=lambda: changes.append(True))
    mas = [_raw_ma("a", "m", "blue"), _raw_ma("b", "m", "green"), _raw_ma("c", "other", "red"),
           {"metadata": {"name": "bad", "namespace": "llm"}, "spec": {"model": ""}}]
    pods = [_raw_pod("blue-0", "blue", True, "10.0.0.1"), _raw_pod("green-0", "green", True, "10.0.0.2"),
            _raw_pod("green-1", "green", False), _raw_pod("red-0", "red", False)]
    endpoints.autoscalers._items = {object_key(o): _route(o) for o in mas}
    endpoints.pods._items = {object_key(p): pod_info(p) for p in pods}
    endpoints._rebuild()
    assert changes, "the router is told to wake its held requests"
    assert set(endpoints.models()) == {"m", "other"}, "an invalid ModelAutoscaler routes nothing"
    assert sorted(e.url for e in endpoints.ready("m")) == ["http://10.0.0.1:9000", "http://10.0.0.2:9000"]
    assert endpoints.ready("other") == () and endpoints.starting("other") == 1 and endpoints.starting("m") == 1
    assert [r.name for r in endpoints.autoscalers_of("m")] == ["a", "b"]
