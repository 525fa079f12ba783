"""Parsing an engine's /metrics text into an EngineSample (hand-written edge cases; the real
engine's text is parsed in tests/integration/test_sensors_vllm.py)."""
from __future__ import annotations

import math

import pytest

from autoscaler.metrics.resolver import MappingResolver, PodIPResolver, PodRef
from autoscaler.metrics.scrape import MetricsParseError, Scraper, parse_metrics

TWO_MODELS = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a"} 3.0
vllm:num_requests_waiting{engine="1",model_name="a"} 2.0
vllm:num_requests_waiting{engine="0",model_name="b"} 7.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 4.0
vllm:num_requests_running{engine="1",model_name="a"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="a"} 0.25
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="a"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="a"} 5.0
vllm:request_success_created{engine="0",finished_reason="length",model_name="a"} 1.7e9
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="a"} 1000.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="a"} 400.0
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="a"} 2.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="a"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="a"} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="a"} 15.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="a"} 15.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="a"} 6.5
# TYPE warmscale_router_arrivals counter
warmscale_router_arrivals_total{model="a"} 42.0
warmscale_router_arrivals_total{model="b"} 9.0
# TYPE warmscale_router_held_requests gauge
warmscale_router_held_requests{model="a"} 1.0
"""


def test_series_of_one_model_are_summed_or_averaged():
    s = parse_metrics(TWO_MODELS, time=12.5, model="a")
    assert s.time == 12.5
    assert s.waiting == 5.0 and s.running == 5.0
    assert s.kv_cache_usage == pytest.approx(0.375)
    assert s.request_success == 15.0            # every finish reason; _created samples ignored
    assert s.prompt_tokens == 1000.0 and s.generation_tokens == 400.0 and s.preemptions == 2.0
    assert s.ttft is not None and s.ttft.count == 15.0 and s.ttft.sum == 6.5
    assert s.ttft.buckets == ((0.1, 5.0), (1.0, 12.0), (math.inf, 15.0))
    assert s.arrivals == 42.0 and s.held == 1.0


def test_without_a_model_every_series_counts():
    s = parse_metrics(TWO_MODELS, time=0.0)
    assert s.waiting == 12.0
    assert s.arrivals == 51.0


def test_missing_series_are_none_never_zero():
    s = parse_metrics(TWO_MODELS, time=0.0, model="b")
    assert s.waiting == 7.0
    assert s.running is None and s.kv_cache_usage is None and s.request_success is None
    assert s.ttft is None and s.held is None
    assert s.arrivals == 9.0


def test_empty_text_gives_an_all_missing_sample():
    s = parse_metrics("", time=1.0, model="a")
    assert (s.waiting, s.running, s.kv_cache_usage, s.prompt_tokens, s.ttft) == (None, None, None, None, None)


def test_legacy_kv_cache_name_is_read_when_the_new_one_is_absent():
    text = ('# TYPE vllm:gpu_cache_usage_perc gauge\n'
            'vllm:gpu_cache_usage_perc{model_name="a"} 0.8\n')
    assert parse_metrics(text, time=0.0, model="a").kv_cache_usage == pytest.approx(0.8)


def test_new_kv_cache_name_wins_over_the_legacy_one():
    text = ('vllm:gpu_cache_usage_perc{model_name="a"} 0.8\n'
            'vllm:kv_cache_usage_perc{model_name="a"} 0.1\n')
    assert parse_metrics(text, time=0.0, model="a").kv_cache_usage == pytest.approx(0.1)


def test_extra_labels_narrow_to_one_pod():
    text = ('vllm:num_requests_waiting{model_name="a",pod="p1"} 1\n'
            'vllm:num_requests_waiting{model_name="a",pod="p2"} 4\n')
    assert parse_metrics(text, time=0.0, model="a", labels={"pod": "p2"}).waiting == 4.0


def test_nan_values_count_as_missing():
    text = 'vllm:num_requests_waiting{model_name="a"} NaN\n'
    assert parse_metrics(text, time=0.0, model="a").waiting is None


def test_text_that_is_not_exposition_format_is_an_error():
    with pytest.raises(MetricsParseError, match="not Prometheus text format"):
        parse_metrics("vllm:num_requests_waiting{model_name=a 3\n", time=0.0)


def test_scraper_reports_a_dead_target_as_missing_with_the_url():
    with Scraper(timeout_s=0.5) as scraper:
        results = scraper.scrape({"pod-1": "http://127.0.0.1:9/metrics"})
    r = results["pod-1"]
    assert r.sample is None
    assert "http://127.0.0.1:9/metrics" in r.error and "failed" in r.error


def _serve(handler):
    """A loopback HTTP server answering every GET with handler() -> (status, body)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = handler()
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status,body,expected", [
    (200, TWO_MODELS, None),
    (500, "boom", "HTTP 500"),
    (200, "vllm:x{a=1 2\n", "not Prometheus text format"),
])
def test_scraper_stamps_samples_and_names_what_went_wrong(status, body, expected):
    server = _serve(lambda: (status, body))
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        with Scraper(timeout_s=2, model="a", clock=lambda: 77.0) as scraper:
            r = scraper.scrape({"p": url})["p"]
    finally:
        server.shutdown()
    if expected is None:
        assert r.error is None and r.sample.time == 77.0 and r.sample.waiting == 5.0
    else:
        assert r.sample is None and expected in r.error and url in r.error


def test_scraper_rejects_a_nonpositive_timeout():
    with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
        Scraper(timeout_s=0)


def test_pod_ip_resolver_builds_the_pod_url():
    resolver = PodIPResolver(port=8000)
    assert resolver.metrics_url(PodRef("p", "ns", "10.244.0.7")) == "http://10.244.0.7:8000/metrics"
    assert resolver.metrics_url(PodRef("p", "ns", "fd00::7")) == "http://[fd00::7]:8000/metrics"
    assert resolver.metrics_url(PodRef("p", "ns", None)) is None


def test_pod_ip_resolver_rejects_a_bad_port():
    with pytest.raises(ValueError, match="1..65535, got 0"):
        PodIPResolver(port=0)


def test_mapping_resolver_sends_known_pods_to_loopback():
    resolver = MappingResolver({"p": "http://127.0.0.1:8001/metrics"})
    assert resolver.metrics_url(PodRef("p", ip="10.244.0.9")) == "http://127.0.0.1:8001/metrics"
    assert resolver.metrics_url(PodRef("q")) is None



def test_template_resolver_fills_name_namespace_and_ip():
    from autoscaler.metrics.resolver import TemplateResolver

    r = TemplateResolver("http://127.0.0.1:9400/pods/{namespace}/{name}/metrics")
    assert r.metrics_url(PodRef("p", "llm", "10.244.0.1")) == "http://127.0.0.1:9400/pods/llm/p/metrics"
    assert TemplateResolver("http://{ip}:8000/metrics").metrics_url(PodRef("p")) is None


@pytest.mark.parametrize("template,message", [
    ("http://127.0.0.1/{pod}/metrics", "only {name}, {namespace} and {ip}"),
    ("127.0.0.1/{name}", "must start with http"),
])
def test_template_resolver_rejects_a_bad_template(template, message):
    from autoscaler.metrics.resolver import TemplateResolver

    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        TemplateResolver(template)


def test_series_the_sample_does_not_read_change_nothing():
    noise = "".join(f"# TYPE vllm:other_{i} histogram\nvllm:other_{i}_bucket{{le=\"1\",model_name=\"a\"}} {i}\n"
                    for i in range(200))
    assert parse_metrics(noise + TWO_MODELS + "python_gc_objects_collected_total 9\n", 1.0, "a") == \
        parse_metrics(TWO_MODELS, 1.0, "a")


def test_one_scraper_serves_many_models_and_a_sensor_leaves_a_shared_one_open():
    from autoscaler.metrics.direct import DirectSensor

    server = _serve(lambda: (200, TWO_MODELS))
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    pod = PodRef("p", "ns", "10.0.0.1")
    try:
        with Scraper(timeout_s=2) as shared:
            a = DirectSensor("a", MappingResolver({"p": url}), scraper=shared)
            b = DirectSensor("b", MappingResolver({"p": url}), scraper=shared)
            assert a.observe(10.0, [pod], 0).observation.waiting_requests == 5.0
            assert b.observe(10.0, [pod], 0).observation.waiting_requests == 7.0
            a.close()
            assert b.observe(11.0, [pod], 0).observation.waiting_requests == 7.0
    finally:
        server.shutdown()


TRICKY = TWO_MODELS + """\
vllm:num_requests_waiting{model_name="c",path="a\\"b,c}d",engine="0"} 2 1700000000000
vllm:num_requests_waiting{ model_name = "c" , engine="1\\\\",} 3.5e0
vllm:num_requests_running{model_name="c",note="line\\nbreak"} +Inf
vllm:num_requests_running 6
vllm:kv_cache_usage_perc{model_name="c"}   -0.0
"""


@pytest.mark.parametrize("model", [None, "a", "b", "c"])
def test_fast_parser_reads_what_the_general_parser_reads(model):
    """The controller's own line parser against prometheus_client's on the same text: same
    samples, labels (escapes, commas and braces inside values) and values for every series read."""
    from prometheus_client.parser import text_string_to_metric_families

    from autoscaler.metrics.scrape import _READ, _parse_lines, _select

    general: dict = {}
    for family in text_string_to_metric_families(TRICKY):
        for s in family.samples:
            if s.name.startswith(_READ):
                general.setdefault(s.name, []).append((s.labels, float(s.value)))
    want = {"model_name": model} if model else {}
    expected = {n: [(lbl, v) for lbl, v in rows if all(lbl.get(k) == x for k, x in want.items())]
                for n, rows in general.items()}
    assert _select(_parse_lines(TRICKY), want) == {n: rows for n, rows in expected.items() if rows}


@pytest.mark.parametrize("line", [
    'vllm:num_requests_waiting{model_name="a"} three',
    'vllm:num_requests_waiting{model_name="a} 3',
    'vllm:num_requests_waiting{model_name="a",} 3 4 5',
    'vllm:num_requests_waiting{model_name="a"}',
])
def test_fast_parser_rejects_a_broken_line_of_a_series_it_reads(line):
    with pytest.raises(MetricsParseError, match="not Prometheus text format"):
        parse_metrics(line + "\n", time=0.0, model="a")


def test_a_page_without_any_series_read_is_still_checked():
    assert parse_metrics("# HELP x y\nx_total 3\n", time=0.0).waiting is None
    with pytest.raises(MetricsParseError, match="not Prometheus text format"):
        parse_metrics("<html><body>login</body></html>\n", time=0.0)
