"""Demand history from the trace files kept in the shared traces directory.

Two formats are understood:

* ServeGen rate files (`window_start_s, model, category, aggregate_rate_rps, active_clients`), one row
  per model per 600 s window (Alibaba ServeGen, Apache-2.0). Rate 0 marks a collection gap, not zero
  demand, so such windows are missing. Windows that sit right next to a gap and carry less than
  `partial_fraction` of the model's median rate are partly collected windows and are missing too.
* Azure LLM inference traces 2023 (`TIMESTAMP, ContextTokens, GeneratedTokens`), one row per request
  (Azure Public Dataset, CC-BY 4.0); aggregated to `window_s` (default 60 s) windows of request,
  prompt-token and generated-token rates.

Trace names: "servegen" (every model), "servegen-<model>" (for example "servegen-m-large"),
"azure-code", "azure-conv", or a path to a CSV file in either format.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from forecasting.series import InvalidSeriesError, WindowedSeries

SERVEGEN_FILE = "servegen_dev/servegen_language_rates_10min_days1-10.csv"
AZURE_FILES = {
    "azure-code": "azure_llm_2023/AzureLLMInferenceTrace_code.csv",
    "azure-conv": "azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
}
TRACES_DIR_ENV = "WARMSCALE_TRACES_DIR"


def traces_dir() -> Path:
    """The traces directory: `$WARMSCALE_TRACES_DIR`, else `../shared/data/traces` from the repository root."""
    override = os.environ.get(TRACES_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "traces"


def load_trace(name_or_path: str, model: str | None = None) -> list[WindowedSeries]:
    """Load the series of a named trace or a CSV file, optionally keeping only `model`."""
    base = traces_dir()
    if name_or_path == "servegen" or name_or_path.startswith("servegen-"):
        series = load_servegen(base / SERVEGEN_FILE)
        if name_or_path != "servegen":
            model = model or name_or_path.removeprefix("servegen-")
    elif name_or_path in AZURE_FILES:
        series = [load_azure(base / AZURE_FILES[name_or_path], model=name_or_path)]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            known = ", ".join(["servegen", "servegen-<model>", *AZURE_FILES])
            raise FileNotFoundError(f"trace {name_or_path!r} is neither a file nor a known trace ({known})")
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if "aggregate_rate_rps" in header:
            series = load_servegen(path)
        elif "TIMESTAMP" in header:
            series = [load_azure(path, model=path.stem)]
        else:
            raise InvalidSeriesError(f"trace {path} has an unknown header {header!r}")
    if model is not None:
        series = [s for s in series if s.model == model]
        if not series:
            raise InvalidSeriesError(f"model {model!r} is not in trace {name_or_path!r}")
    return series


def load_servegen(path: Path, partial_fraction: float = 0.05) -> list[WindowedSeries]:
    """One series per model from a ServeGen rate file; gaps and partly collected windows are missing."""
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            rows[row["model"]].append((float(row["window_start_s"]), float(row["aggregate_rate_rps"])))
    series = []
    for model, points in sorted(rows.items()):
        times = np.array([p[0] for p in points])
        rates = np.array([p[1] for p in points])
        window_s = float(np.min(np.diff(times))) if len(times) > 1 else 600.0
        missing = collection_gaps(rates, partial_fraction)
        series.append(WindowedSeries.from_points(model, times[~missing], rates[~missing], window_s))
    return series


def collection_gaps(rates: np.ndarray, partial_fraction: float = 0.05) -> np.ndarray:
    """Which ServeGen windows are collection gaps: zero windows plus the runs of near-zero windows
    (below `partial_fraction` of the median rate) that touch them, i.e. partly collected windows."""
    missing = rates == 0
    if not missing.any():
        return missing
    low = rates < partial_fraction * np.median(rates[~missing])
    while True:
        grown = missing.copy()
        grown[1:] |= missing[:-1] & low[1:]
        grown[:-1] |= missing[1:] & low[:-1]
        if (grown == missing).all():
            return missing
        missing = grown


def load_azure(path: Path, model: str, window_s: float = 60.0) -> WindowedSeries:
    """Aggregate a request-level Azure trace to request and token rates per `window_s` window."""
    stamps, prompt, generated = [], [], []
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            stamps.append(row["TIMESTAMP"][:26])  # microsecond precision is plenty
            prompt.append(float(row["ContextTokens"]))
            generated.append(float(row["GeneratedTokens"]))
    if not stamps:
        raise InvalidSeriesError(f"trace {path} holds no request")
    t = np.array(stamps, dtype="datetime64[us]").astype(np.int64) / 1e6
    t -= t[0]
    index = (t // window_s).astype(int)
    # The trace stops somewhere inside its last window, so that window is only partly observed.
    n = max(int(index[-1]), 1)
    index, prompt_arr, generated_arr = index[index < n], np.asarray(prompt)[index < n], np.asarray(generated)[index < n]
    counts = np.bincount(index, minlength=n)
    # A request trace has no gaps: a window without requests is real zero demand.
    return WindowedSeries(
        model=model,
        start=0.0,
        window_s=window_s,
        values=counts / window_s,
        prompt_tokens=np.bincount(index, weights=prompt_arr, minlength=n) / window_s,
        generation_tokens=np.bincount(index, weights=generated_arr, minlength=n) / window_s,
    )
