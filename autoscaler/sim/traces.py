"""Trace loading, validation, scaling and arrival generation for the simulator.

Two kinds of trace:

* **Request traces** (Azure LLM inference trace 2023): one row per request with its arrival
  time and token counts (`TIMESTAMP, ContextTokens, GeneratedTokens`). Each file is one model.
* **Rate traces** (ServeGen): one row per model per window with an aggregate request rate
  (`window_start_s, model, category, aggregate_rate_rps, active_clients`). Arrivals are drawn
  from the rate with a stated burstiness (Gamma-renewal inter-arrival times with a given
  coefficient of variation, CV 1 = Poisson), and token counts are resampled from a request trace
  because the rate files carry none.

Every trace is scaled to the simulated fleet (see `scale_for_profile`): the Azure traces were
recorded on large models and ServeGen's rates are a whole provider's, so unscaled they either fit
on one replica or need thousands. The factor is stated in every result.

Bad input raises `TraceError` naming the file, the row (1-based, counting the header as row 1,
so it matches what an editor shows) and the column.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from forecasting.traces import collection_gaps

__all__ = [
    "TraceError",
    "Workload",
    "RateTrace",
    "TRACE_NAMES",
    "traces_dir",
    "resolve_trace",
    "load_request_trace",
    "load_rate_trace",
    "load_workload",
    "scale_requests",
    "arrivals_from_rate",
    "human_span",
    "scale_factor",
    "LONG_CONTEXT",
]

REQUEST_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
RATE_COLUMNS = ("window_start_s", "model", "aggregate_rate_rps")

# name -> (relative path under the traces dir, model inside a rate file or None)
TRACE_NAMES: dict[str, tuple[str, str | None]] = {
    "azure-code": ("azure_llm_2023/AzureLLMInferenceTrace_code.csv", None),
    "azure-conv": ("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", None),
    "servegen-m-large": ("servegen_dev/servegen_language_rates_10min_days1-10.csv", "m-large"),
    "servegen-m-mid": ("servegen_dev/servegen_language_rates_10min_days1-10.csv", "m-mid"),
    "servegen-m-small": ("servegen_dev/servegen_language_rates_10min_days1-10.csv", "m-small"),
}
# Long-context workloads: a shipped request trace with every prompt multiplied by a factor (outputs,
# arrivals and their burstiness as recorded). azure-conv x16: median prompt 1,020 -> 16,320 tokens,
# p90 ~44k, p99 ~66k; the longest (14,050 x 16 = 224,800) exceed Llama-3.1's 131,072 and are
# rejected by the engine, so they count as unattainable.
LONG_CONTEXT: dict[str, tuple[str, float]] = {"azure-conv-long": ("azure-conv", 16.0)}
# Token lengths for rate traces come from this request trace (a real chat service's lengths).
LENGTHS_FROM = "azure-conv"

DAY_S = 86400.0


class TraceError(ValueError):
    """A trace file is malformed. The message names file, row and column."""

    def __init__(self, path: str | Path, row: int | None, column: str | None, problem: str):
        self.path, self.row, self.column, self.problem = str(path), row, column, problem
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {problem}")


def traces_dir() -> Path:
    """The shared traces folder: $WARMSCALE_TRACES_DIR, else ../shared/data/traces from the repo root."""
    env = os.environ.get("WARMSCALE_TRACES_DIR")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return (repo_root / ".." / "shared" / "data" / "traces").resolve()


def resolve_trace(name_or_path: str) -> tuple[Path, str | None]:
    """Map a trace name ("azure-code", "servegen-m-large", ...) or a file path to (path, model-in-file)."""
    if name_or_path in TRACE_NAMES:
        rel, model = TRACE_NAMES[name_or_path]
        path = traces_dir() / rel
        if not path.exists():
            raise FileNotFoundError(
                f"trace {name_or_path!r} resolves to {path}, which does not exist; "
                f"set WARMSCALE_TRACES_DIR to the folder holding azure_llm_2023/ and servegen_dev/")
        return path, model
    # "file.csv::model" picks one model out of a rate file (two colons: a path may hold one)
    path_s, _, model = name_or_path.partition("::")
    path = Path(path_s)
    if not path.exists():
        head, sep, tail = path_s.rpartition(":")
        if sep and head and Path(head).exists():
            raise FileNotFoundError(
                f"trace {name_or_path!r}: no such file; to pick model {tail!r} of {head}, write "
                f"{head}::{tail} (two colons)")
        raise FileNotFoundError(
            f"trace {name_or_path!r} is neither a known name ({', '.join(TRACE_NAMES)}) nor an existing file")
    return path, (model or None)


# --------------------------------------------------------------------------- request traces

def _parse_time(value: str) -> float | None:
    """A float of seconds, or a wall-clock timestamp (seconds since the epoch, naive = UTC)."""
    try:
        return float(value)
    except ValueError:
        pass
    text = value.strip()
    # Azure writes 7 fractional digits; datetime takes at most 6.
    if "." in text:
        head, frac = text.rsplit(".", 1)
        if frac.isdigit():
            text = f"{head}.{frac[:6]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return (dt - datetime(1970, 1, 1)).total_seconds()
    return dt.timestamp()


def _check_header(path: Path, header: list[str] | None, required: tuple[str, ...]) -> dict[str, int]:
    if not header:
        raise TraceError(path, 1, None, "empty file: expected a header row with columns " + ", ".join(required))
    cols = {name.strip(): i for i, name in enumerate(header)}
    for name in required:
        if name not in cols:
            raise TraceError(path, 1, name, f"missing column {name!r}; the header has {', '.join(cols) or 'nothing'}")
    return cols


def _int_cell(path: Path, row_no: int, col: str, cell: str) -> int:
    try:
        value = float(cell)
    except ValueError:
        raise TraceError(path, row_no, col, f"{cell!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise TraceError(path, row_no, col, f"{cell!r} is not a non-negative whole number of tokens")
    return int(value)


def load_request_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an Azure-format request trace. Returns (arrival_s from the first request, prompt, output).

    Timestamps may be wall-clock (`2023-11-16 18:17:03.97`) or plain seconds. They must be
    non-negative (when numeric) and sorted; token counts must be non-negative integers.
    """
    path = Path(path)
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        cols = _check_header(path, next(reader, None), REQUEST_COLUMNS)
        it, ip, io = cols["TIMESTAMP"], cols["ContextTokens"], cols["GeneratedTokens"]
        width = max(it, ip, io) + 1
        prev = -math.inf
        for row_no, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width:
                missing = [c for c, i in (("TIMESTAMP", it), ("ContextTokens", ip), ("GeneratedTokens", io))
                           if i >= len(row)][0]
                raise TraceError(path, row_no, missing, f"row has {len(row)} cells; column {missing!r} is missing")
            cell = row[it].strip()
            t = _parse_time(cell)
            if t is None or not math.isfinite(t):
                raise TraceError(path, row_no, "TIMESTAMP", f"{cell!r} is neither seconds nor a timestamp")
            if t < 0:
                raise TraceError(path, row_no, "TIMESTAMP", f"negative timestamp {cell!r}")
            if t < prev:
                raise TraceError(path, row_no, "TIMESTAMP",
                                 f"timestamps are not sorted: {cell!r} comes after a later one (row {row_no - 1})")
            prev = t
            times.append(t)
            prompts.append(_int_cell(path, row_no, "ContextTokens", row[ip].strip()))
            outputs.append(_int_cell(path, row_no, "GeneratedTokens", row[io].strip()))
    if not times:
        raise TraceError(path, 2, None, "no requests after the header")
    arr = np.asarray(times, dtype=np.float64)
    arr -= arr[0]
    # A request that generates nothing still costs its prefill and one scheduler pass: count 1 token.
    out = np.maximum(np.asarray(outputs, dtype=np.int64), 1)
    return arr, np.asarray(prompts, dtype=np.int64), out


# --------------------------------------------------------------------------- rate traces

@dataclass(frozen=True)
class RateTrace:
    """Piecewise rates for one model: window starts (s), window length (s) and rates (req/s).

    Windows with a rate of 0 are collection gaps (per the ServeGen README), and so are the
    near-zero, partly collected windows at their edges (forecasting.traces.collection_gaps, the
    one rule both packages use); they are filled from their neighbours by linear interpolation;
    `gaps` counts them.
    """

    path: str
    model: str
    window_s: float
    starts: np.ndarray
    rates: np.ndarray
    gaps: int = 0

    @property
    def duration_s(self) -> float:
        return float(self.starts[-1] + self.window_s)

    def rate_at(self, t: np.ndarray | float) -> np.ndarray:
        """Rate at time(s) `t`, linear between window centres (no artificial 10-minute steps)."""
        centres = self.starts + self.window_s / 2
        return np.interp(t, centres, self.rates)


def _nonnegative_cell(path, row_no: int, column: str, text: str, what: str) -> float:
    """A finite, non-negative number from one CSV cell, or a TraceError naming file, row and column."""
    try:
        value = float(text)
    except ValueError:
        raise TraceError(path, row_no, column, f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(path, row_no, column, f"negative or non-finite {what} {text!r}")
    return value


def load_rate_trace(path: str | Path, model: str | None) -> RateTrace:
    path = Path(path)
    by_model: dict[str, list[tuple[float, float, int]]] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        cols = _check_header(path, next(reader, None), RATE_COLUMNS)
        iw, im, ir = cols["window_start_s"], cols["model"], cols["aggregate_rate_rps"]
        width = max(iw, im, ir) + 1
        last: dict[str, float] = {}
        for row_no, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width:
                raise TraceError(path, row_no, None, f"row has {len(row)} cells, the header names {width} or more")
            name = row[im].strip()
            start = _nonnegative_cell(path, row_no, "window_start_s", row[iw], "start")
            if start <= last.get(name, -math.inf):
                raise TraceError(path, row_no, "window_start_s",
                                 f"windows of model {name!r} are not sorted: {row[iw]!r} does not come after "
                                 f"{last[name]:g}")
            last[name] = start
            rate = _nonnegative_cell(path, row_no, "aggregate_rate_rps", row[ir], "rate")
            by_model.setdefault(name, []).append((start, rate, row_no))
    if not by_model:
        raise TraceError(path, 2, None, "no windows after the header")
    if model is None:
        if len(by_model) > 1:
            raise TraceError(path, None, "model", f"the file holds several models ({', '.join(sorted(by_model))}); "
                                                  f"pick one as FILE::MODEL")
        model = next(iter(by_model))
    if model not in by_model:
        raise TraceError(path, None, "model", f"no rows for model {model!r}; it holds {', '.join(sorted(by_model))}")
    rows = by_model[model]
    starts = np.array([r[0] for r in rows])
    rates = np.array([r[1] for r in rows])
    window = float(np.median(np.diff(starts))) if len(starts) > 1 else 600.0
    gap = collection_gaps(rates)
    if gap.all():
        raise TraceError(path, rows[0][2], "aggregate_rate_rps", f"every window of model {model!r} has rate 0")
    if gap.any():
        idx = np.arange(len(rates))
        rates = rates.copy()
        rates[gap] = np.interp(idx[gap], idx[~gap], rates[~gap])
    return RateTrace(str(path), model, window, starts, rates, int(gap.sum()))


# --------------------------------------------------------------------------- workloads

@dataclass
class Workload:
    """Arrivals for one model, ready to simulate. Times are seconds on the trace's clock.

    `scale` is the factor applied to the trace's request rate; `start_s`/`end_s` the simulated
    span (a slice of the trace), `history` the unscaled rate trace when there is one (to feed a
    pre-warm planner the days before the slice).
    """

    name: str
    model: str
    arrival: np.ndarray      # float64 seconds, sorted
    prompt: np.ndarray       # int64 tokens
    output: np.ndarray       # int64 tokens (>= 1)
    start_s: float
    end_s: float
    scale: float = 1.0
    kind: str = "requests"   # "requests" | "rate"
    source: str = ""
    notes: list[str] = field(default_factory=list)
    rate_trace: RateTrace | None = None
    burstiness_cv: float | None = None

    def __len__(self) -> int:
        return int(self.arrival.size)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def per_minute(self, bin_s: float = 60.0) -> dict[str, np.ndarray]:
        """Demand per bin: start times, requests/s, prompt tokens/s, generated tokens/s."""
        n_bins = max(1, int(math.ceil(self.duration_s / bin_s)))
        idx = np.clip(((self.arrival - self.start_s) // bin_s).astype(np.int64), 0, n_bins - 1)
        count = np.bincount(idx, minlength=n_bins).astype(np.float64)
        ptok = np.bincount(idx, weights=self.prompt, minlength=n_bins)
        gtok = np.bincount(idx, weights=self.output, minlength=n_bins)
        starts = self.start_s + bin_s * np.arange(n_bins)
        return {"start": starts, "rate": count / bin_s, "prompt_rate": ptok / bin_s, "gen_rate": gtok / bin_s}


def scale_requests(arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, factor: float,
                   rng: np.random.Generator, jitter_s: float = 2.0):
    """Multiply a request trace's rate by `factor`, keeping its shape over time.

    Each request is repeated floor(factor) times, plus once more with probability frac(factor);
    a factor below 1 keeps each request with probability `factor`. Copies after the first are
    shifted by U(0, jitter_s) so that they do not land on the same instant. Token counts are
    kept with their request.
    """
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    whole = int(math.floor(factor))
    frac = factor - whole
    copies = np.full(arrival.size, whole, dtype=np.int64) + (rng.random(arrival.size) < frac)
    idx = np.repeat(np.arange(arrival.size), copies)
    # rank of each copy among its request's copies: 0 for the first
    first = np.concatenate(([0], np.cumsum(copies)[:-1]))
    rank = np.arange(idx.size) - np.repeat(first, copies)
    t = arrival[idx] + np.where(rank > 0, rng.random(idx.size) * jitter_s, 0.0)
    order = np.argsort(t, kind="stable")
    return t[order], prompt[idx][order], output[idx][order]


def arrivals_from_rate(rate_trace: RateTrace, start_s: float, end_s: float, factor: float, cv: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [start_s, end_s) from `factor` x the trace's rate.

    A unit-rate Gamma-renewal process (shape 1/cv^2, so inter-arrival CV = `cv`; cv=1 is Poisson)
    runs in "operational time" Lambda(t) = integral of the rate, and is mapped back to wall time
    through Lambda's inverse (time rescaling), so the rate follows the trace and the burstiness
    is the stated one.
    """
    if cv <= 0:
        raise ValueError(f"burstiness cv must be > 0, got {cv}")
    grid = np.arange(start_s, end_s + 1.0, 1.0)
    lam = rate_trace.rate_at(grid) * factor
    cum = np.concatenate(([0.0], np.cumsum((lam[1:] + lam[:-1]) / 2 * np.diff(grid))))
    total = cum[-1]
    shape = 1.0 / (cv * cv)
    n_guess = int(total + 6 * math.sqrt(total + 1) * max(cv, 1.0) + 16)
    gaps = rng.gamma(shape, 1.0 / shape, size=n_guess)
    ops = np.cumsum(gaps)
    while ops[-1] < total:
        more = np.cumsum(rng.gamma(shape, 1.0 / shape, size=max(16, n_guess // 10))) + ops[-1]
        ops = np.concatenate((ops, more))
    # a random phase so that the first arrival is not always one mean gap in
    ops = ops - rng.random() * gaps[0]
    ops = ops[(ops >= 0) & (ops < total)]
    return np.interp(ops, cum, grid)


def load_workload(trace: str, *, factor: float | None = None, profile=None, peak_replicas: float = 10.0,
                  start_s: float | None = None, end_s: float | None = None, cv: float = 1.5,
                  seed: int = 0, prompt_scale: float = 1.0) -> Workload:
    """Load a trace by name or path and scale it.

    `factor` scales the rate; when None it is chosen from `profile` so that the trace's peak
    minute needs `peak_replicas` replicas at the profile's sustainable rate (see
    `EngineProfile.sustainable_rate`). `start_s`/`end_s` slice the trace (seconds on its own clock,
    e.g. ServeGen days 8-10 = 7*86400 .. 10*86400); `cv` is the arrival burstiness for rate traces.
    `prompt_scale` multiplies every prompt length (a name in `LONG_CONTEXT` sets it).
    """
    if trace in LONG_CONTEXT:
        base, k = LONG_CONTEXT[trace]
        w = load_workload(base, factor=factor, profile=profile, peak_replicas=peak_replicas, start_s=start_s,
                          end_s=end_s, cv=cv, seed=seed, prompt_scale=prompt_scale * k)
        w.name = w.model = trace
        return w
    if not (prompt_scale > 0 and math.isfinite(prompt_scale)):
        raise ValueError(f"prompt_scale: expected a finite number > 0, got {prompt_scale!r}")
    path, model = resolve_trace(trace)
    rng = np.random.default_rng(seed)
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), None) or []
    header = [h.strip() for h in header]
    name = trace if trace in TRACE_NAMES else Path(trace).stem
    if "aggregate_rate_rps" in header or "window_start_s" in header:
        rt = load_rate_trace(path, model)
        lp, lo = _lengths_pool()
        lp = _scaled_prompts(lp, prompt_scale)
        s0, s1, clip_note = _clip_slice(name, start_s, end_s, 0.0, rt.duration_s)
        if factor is None:
            if profile is None:
                raise ValueError("either factor or profile is needed to scale a trace")
            factor = _rate_factor(rt, lp, lo, s0, s1, profile, peak_replicas)
        t = arrivals_from_rate(rt, s0, s1, factor, cv, rng)
        pick = rng.integers(0, lp.size, size=t.size)
        notes = [f"arrivals: Gamma renewal, CV {cv:g}, on {factor:.4g} x the trace's rate "
                 f"(linear between 10-minute window centres)",
                 f"token lengths resampled from {LENGTHS_FROM} (the rate file has none)"
                 + (f", every prompt {prompt_scale:g} x its recorded length" if prompt_scale != 1.0 else "")]
        if clip_note:
            notes.append(clip_note)
        if rt.gaps:
            notes.append(f"{rt.gaps} collection-gap windows (rate 0, or partly collected next to one) filled by interpolation")
        return Workload(name, model or rt.model, t, lp[pick], lo[pick], s0, s1, factor, "rate", str(path), notes,
                        rt, cv)
    arrival, prompt, output = load_request_trace(path)
    prompt = _scaled_prompts(prompt, prompt_scale)
    s0, s1, clip_note = _clip_slice(name, start_s, end_s, 0.0, float(arrival[-1]) + 1e-9)
    sel = (arrival >= s0) & (arrival < s1)
    arrival, prompt, output = arrival[sel], prompt[sel], output[sel]
    if arrival.size == 0:
        raise ValueError(f"slice {human_span(s0)} - {human_span(s1)} of trace {name} holds no request")
    if factor is None:
        if profile is None:
            raise ValueError("either factor or profile is needed to scale a trace")
        factor = _factor_for_requests(arrival, prompt, output, s0, s1, profile, peak_replicas)
    t, p, o = scale_requests(arrival, prompt, output, factor, rng)
    notes = [f"each request repeated {factor:.4g} x on average (copies jittered by up to 2 s)"]
    if prompt_scale != 1.0:
        notes.append(f"every prompt {prompt_scale:g} x its recorded length (median {int(np.median(p)):,} tokens)")
    if clip_note:
        notes.append(clip_note)
    return Workload(name, name, t, p, o, s0, s1, factor, "requests", str(path), notes)


def _rate_factor(rt: RateTrace, lp, lo, s0: float, s1: float, profile, peak_replicas: float) -> float:
    mask = (rt.starts + rt.window_s > s0) & (rt.starts < s1)
    peak = float(rt.rates[mask].max())
    per_replica = profile.sustainable_rate(float(lp.mean()), float(lo.mean()))
    return peak_replicas * per_replica / peak


def scale_factor(trace: str, profile, peak_replicas: float = 10.0, start_s: float | None = None,
                 end_s: float | None = None, prompt_scale: float = 1.0) -> float:
    """The rate factor `load_workload` would choose for this slice, without drawing its arrivals
    (so a long slice can fix the factor used on others)."""
    if trace in LONG_CONTEXT:
        base, k = LONG_CONTEXT[trace]
        return scale_factor(base, profile, peak_replicas, start_s, end_s, prompt_scale * k)
    path, model = resolve_trace(trace)
    with open(path, newline="") as fh:
        header = [h.strip() for h in (next(csv.reader(fh), None) or [])]
    if "aggregate_rate_rps" in header or "window_start_s" in header:
        rt = load_rate_trace(path, model)
        lp, lo = _lengths_pool()
        s0, s1, _ = _clip_slice(trace, start_s, end_s, 0.0, rt.duration_s)
        return _rate_factor(rt, _scaled_prompts(lp, prompt_scale), lo, s0, s1, profile, peak_replicas)
    return load_workload(trace, profile=profile, peak_replicas=peak_replicas, start_s=start_s, end_s=end_s,
                         prompt_scale=prompt_scale).scale


def _scaled_prompts(prompt: np.ndarray, k: float) -> np.ndarray:
    return prompt if k == 1.0 else np.round(prompt * k).astype(prompt.dtype)


def human_span(seconds: float) -> str:
    """12600 -> '3h30m', 86400*7 -> '7d', 42.5 -> '42.5s' (the units --slice accepts)."""
    s = float(seconds)
    if s != s or abs(s) == math.inf:
        return str(s)
    sign, s = ("-", -s) if s < 0 else ("", s)
    d, rem = divmod(s, DAY_S)
    h, rem = divmod(rem, 3600.0)
    m, sec = divmod(rem, 60.0)
    parts = [f"{int(d)}d" if d else "", f"{int(h)}h" if h else "", f"{int(m)}m" if m else "",
             f"{sec:.3g}s" if sec >= 0.0005 else ""]
    return sign + ("".join(parts) or "0s")


def _clip_slice(name: str, start_s: float | None, end_s: float | None, first_s: float,
                last_s: float) -> tuple[float, float, str | None]:
    """The simulated span inside the trace's [first_s, last_s]: an error when the slice misses the
    trace or is empty, a note when its end is cut to the trace's end."""
    s0 = first_s if start_s is None else float(start_s)
    s1 = last_s if end_s is None else float(end_s)
    if s1 <= s0:
        raise ValueError(f"slice {human_span(s0)}:{human_span(s1)} of trace {name} is empty (its end is not "
                         f"after its start)")
    if s0 >= last_s:
        raise ValueError(f"slice {human_span(s0)}:{human_span(s1)} starts after trace {name} ends "
                         f"(it lasts {human_span(last_s)})")
    if s1 > last_s + 1e-6:
        return s0, last_s, (f"slice end {human_span(s1)} is past the trace's end: clipped to "
                            f"{human_span(s0)}:{human_span(last_s)}")
    return s0, s1, None


def _factor_for_requests(arrival, prompt, output, s0, s1, profile, peak_replicas) -> float:
    """Factor that makes the busiest minute need `peak_replicas` replicas of `profile` (the minute's
    need is that of its busiest 10-second step, as the oracle sizes steps)."""
    from autoscaler.sim.oracle import need_per_step

    need = need_per_step(arrival, prompt, output, s0, s1, profile)
    return peak_replicas / float(need.max())


_POOL: tuple[np.ndarray, np.ndarray] | None = None


def _lengths_pool() -> tuple[np.ndarray, np.ndarray]:
    global _POOL
    if _POOL is None:
        path, _ = resolve_trace(LENGTHS_FROM)
        _, p, o = load_request_trace(path)
        _POOL = (p, o)
    return _POOL
