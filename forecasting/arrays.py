"""Small array helpers shared by the forecasters.

Every helper works along the last axis, so one call serves one series `(T,)` or many `(S, T)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def forward_fill(y: np.ndarray) -> np.ndarray:
    """Carry the last observed value over NaN windows (along the last axis); leading NaNs stay NaN."""
    index = np.where(np.isnan(y), 0, np.arange(y.shape[-1]))
    np.maximum.accumulate(index, axis=-1, out=index)
    # Leading gaps map to index 0, which is itself NaN, so they stay NaN.
    return np.take_along_axis(y, index, axis=-1)


def gather(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`a[..., index]` with NaN where the index falls outside the last axis of `a`."""
    n = a.shape[-1]
    ok = (index >= 0) & (index < n)
    return np.where(ok, a[..., np.clip(index, 0, n - 1)], np.nan)


def pinball_loss(actual: np.ndarray, quantile: np.ndarray, tau: float) -> np.ndarray:
    """Elementwise pinball (quantile) loss of `quantile` as the `tau` quantile of `actual`."""
    diff = actual - quantile
    return np.where(diff >= 0, tau * diff, (tau - 1) * diff)


def last_axis_quantiles(values: np.ndarray, taus: Sequence[float], min_count: int = 1, presorted: bool = False) -> np.ndarray:
    """Quantiles (linear interpolation, as `np.quantile`) along the last axis ignoring NaNs.

    Returns shape `values.shape[:-1] + (len(taus),)`; NaN where fewer than `min_count` values exist.
    Much faster than `np.nanquantile(..., axis=-1)`, which loops in Python. `presorted`: `values`
    is already sorted along the last axis (NaNs last).
    """
    ordered = values if presorted else np.sort(values, axis=-1)  # NaNs sort last
    counts = (~np.isnan(values)).sum(axis=-1)
    last = np.maximum(counts - 1, 0)[..., None]
    position = np.asarray(taus, dtype=float) * last
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, last)
    weight = position - lower
    low_values = np.take_along_axis(ordered, lower, axis=-1)
    high_values = np.take_along_axis(ordered, upper, axis=-1)
    out = low_values + weight * (high_values - low_values)
    return np.where((counts >= max(min_count, 1))[..., None], out, np.nan)


def row_quantiles(rows: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """Quantiles of each row ignoring NaNs: shape `(len(rows), len(taus))`; rows without values give NaN."""
    return last_axis_quantiles(rows, taus)
