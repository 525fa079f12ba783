"""Direct scrape of an engine's (or the router's) `/metrics`: the Prometheus text parsed into an `EngineSample`.

A series the text does not carry is `None` in the sample, never zero. A target that cannot be
scraped (refused, timed out, non-200, unparsable) gives a `ScrapeResult` with `sample=None` and an
`error` naming the URL and what went wrong: a failed scrape is missing data, not an idle engine.
Metric names come from `autoscaler.contract` only.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.contract import (GENERATION_TOKENS, KV_CACHE_USAGE, KV_CACHE_USAGE_LEGACY, MODEL_LABEL,
                                 NUM_PREEMPTIONS, NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, PROMPT_TOKENS,
                                 REQUEST_SUCCESS, ROUTER_ARRIVALS, ROUTER_HELD_REQUESTS, ROUTER_MODEL_LABEL,
                                 TIME_TO_FIRST_TOKEN)

__all__ = ["Histogram", "EngineSample", "MetricsParseError", "parse_metrics", "ScrapeResult", "Scraper", "samples_of"]


class MetricsParseError(ValueError):
    """The text is not Prometheus exposition format."""


@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram summed over the matching series: cumulative counts per upper bound."""

    buckets: tuple[tuple[float, float], ...]   # (le, cumulative count), ascending le, last le = +Inf
    count: float
    sum: float


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One scrape of one target at `time` (seconds, the caller's clock). `None` = series absent."""

    time: float
    waiting: float | None = None             # vllm:num_requests_waiting
    running: float | None = None             # vllm:num_requests_running
    kv_cache_usage: float | None = None      # vllm:kv_cache_usage_perc (or the legacy gpu_cache name), 0..1
    prompt_tokens: float | None = None       # counter
    generation_tokens: float | None = None   # counter
    request_success: float | None = None     # counter, all finish reasons
    preemptions: float | None = None         # counter
    ttft: Histogram | None = None            # vllm:time_to_first_token_seconds
    arrivals: float | None = None            # router counter (warmscale_router_arrivals_total)
    held: float | None = None                # router gauge (warmscale_router_held_requests)


# the series a sample reads; an engine exposes ~10x more lines, and parsing is most of a scrape's cost
_READ = (NUM_REQUESTS_WAITING, NUM_REQUESTS_RUNNING, KV_CACHE_USAGE, KV_CACHE_USAGE_LEGACY, PROMPT_TOKENS,
         GENERATION_TOKENS, REQUEST_SUCCESS, NUM_PREEMPTIONS, TIME_TO_FIRST_TOKEN, ROUTER_ARRIVALS, ROUTER_HELD_REQUESTS)
_READ_PREFIXES = tuple(_READ)

# One sample line of the text exposition format: name, optional {labels}, value, optional timestamp.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*\s*=\s*"(?:[^"\\\n]|\\.)*"'
_SAMPLE = re.compile(rf"({_NAME})\s*(?:\{{\s*((?:{_PAIR}\s*(?:,\s*{_PAIR}\s*)*,?\s*)?)\}})?\s+(\S+)(?:\s+-?\d+)?\s*")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value) if "\\" in value else value


def _parse_lines(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] for the sample lines of the series a sample reads.

    A line-by-line parser of the text exposition format for those few series only (the general
    parser of prometheus_client costs ~0.2 ms a line, most of a controller's tick at 1,000 models).
    A page with none of them is checked by the general parser, so text that is not exposition
    format at all is still reported as such."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    kept = False
    for line in text.splitlines():
        if not line.startswith(_READ_PREFIXES):
            continue
        kept = True
        m = _SAMPLE.fullmatch(line)
        if m is None:
            raise MetricsParseError(f"not Prometheus text format: cannot parse line {line[:200]!r}")
        name, label_text, value_text = m.groups()
        try:
            value = float(value_text)
        except ValueError:
            raise MetricsParseError(f"not Prometheus text format: bad value in line {line[:200]!r}") from None
        labels = {k: _unescape(v) for k, v in _LABEL.findall(label_text)} if label_text else {}
        by_name.setdefault(name, []).append((labels, value))
    if not kept and text.strip():
        _check_exposition(text)
    return by_name


def _check_exposition(text: str) -> None:
    try:
        for _ in text_string_to_metric_families(text):
            pass
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsParseError(f"not Prometheus text format: {exc}") from exc


def _select(parsed: Mapping[str, list[tuple[dict[str, str], float]]],
            labels: Mapping[str, str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples whose labels include `labels`."""
    if not labels:
        return dict(parsed)
    items = tuple(labels.items())
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, rows in parsed.items():
        kept = [(lbl, v) for lbl, v in rows if all(lbl.get(k) == want for k, want in items)]
        if kept:
            out[name] = kept
    return out


def _sum(series: Mapping[str, list], name: str) -> float | None:
    values = [v for _, v in series.get(name, ()) if not math.isnan(v)]
    return sum(values) if values else None


def _mean(series: Mapping[str, list], name: str) -> float | None:
    values = [v for _, v in series.get(name, ()) if not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _histogram(series: Mapping[str, list], name: str) -> Histogram | None:
    per_le: dict[float, float] = {}
    for lbl, v in series.get(f"{name}_bucket", ()):
        le = float(lbl["le"])
        per_le[le] = per_le.get(le, 0.0) + v
    count = _sum(series, f"{name}_count")
    if not per_le or count is None:
        return None
    return Histogram(buckets=tuple(sorted(per_le.items())), count=count, sum=_sum(series, f"{name}_sum") or 0.0)


def parse_metrics(text: str, time: float, model: str | None = None,
                  labels: Mapping[str, str] | None = None) -> EngineSample:
    """Parse exposition `text` scraped at `time`. With `model`, keep only vLLM series whose
    `model_name` is it and router series whose `model` is it; `labels` narrows further (e.g. a pod)."""
    extra = dict(labels or {})
    parsed = _parse_lines(text)
    engine = _select(parsed, {**extra, **({MODEL_LABEL: model} if model else {})})
    router = engine if model is None else _select(parsed, {**extra, ROUTER_MODEL_LABEL: model})
    kv = _mean(engine, KV_CACHE_USAGE)
    if kv is None:
        kv = _mean(engine, KV_CACHE_USAGE_LEGACY)
    return EngineSample(
        time=time,
        waiting=_sum(engine, NUM_REQUESTS_WAITING),
        running=_sum(engine, NUM_REQUESTS_RUNNING),
        kv_cache_usage=kv,
        prompt_tokens=_sum(engine, PROMPT_TOKENS),
        generation_tokens=_sum(engine, GENERATION_TOKENS),
        request_success=_sum(engine, REQUEST_SUCCESS),
        preemptions=_sum(engine, NUM_PREEMPTIONS),
        ttft=_histogram(engine, TIME_TO_FIRST_TOKEN),
        arrivals=_sum(router, ROUTER_ARRIVALS),
        held=_sum(router, ROUTER_HELD_REQUESTS),
    )


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """What scraping one target gave: a sample, or the reason there is none."""

    target: str
    url: str
    sample: EngineSample | None
    error: str | None = None


class Scraper:
    """Scrapes many `/metrics` URLs at once (a thread per target, one pooled httpx client).

    `scrape({target: url})` returns `{target: ScrapeResult}`; it never raises for a dead target.
    The clock (`time.time` by default) stamps each sample when its response arrived. One Scraper
    may serve many models (a controller shares one: a client and its pool cost ~1 MB each):
    `scrape(targets, model=...)` names the model whose series to keep.
    """

    def __init__(self, timeout_s: float = 1.0, model: str | None = None, max_workers: int = 16,
                 clock: Callable[[], float] = time.time):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.model = model
        self.clock = clock
        self._client = httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=max_workers))
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="scrape")

    def scrape_one(self, target: str, url: str, model: str | None = None) -> ScrapeResult:
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            return ScrapeResult(target, url, None, f"scrape of {url} failed: {type(exc).__name__}: {exc}")
        stamp = self.clock()
        if response.status_code != 200:
            return ScrapeResult(target, url, None, f"scrape of {url} answered HTTP {response.status_code}")
        try:
            return ScrapeResult(target, url, parse_metrics(response.text, stamp, model or self.model))
        except MetricsParseError as exc:
            return ScrapeResult(target, url, None, f"scrape of {url}: {exc}")

    def scrape(self, targets: Mapping[str, str], model: str | None = None) -> dict[str, ScrapeResult]:
        return self.scrape_jobs({t: (t, url, model) for t, url in targets.items()})

    def scrape_jobs(self, jobs: Mapping[Hashable, tuple[str, str, str | None]]) -> dict[Hashable, ScrapeResult]:
        """One round over many models' targets at once: `{key: (target, url, model)}` -> `{key: result}`,
        every request in flight as soon as a worker is free."""
        futures = {key: self._pool.submit(self.scrape_one, *job) for key, job in jobs.items()}
        return {key: f.result() for key, f in futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> Scraper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def samples_of(results: Iterable[ScrapeResult]) -> dict[str, EngineSample]:
    """The successful samples of a scrape round, by target."""
    return {r.target: r.sample for r in results if r.sample is not None}
