"""Demand history on a regular grid of windows, with gaps kept as NaN.

Every forecaster in this package reads a `WindowedSeries`. Building one validates the input
once: empty input, NaN or infinite values, negative rates and unsorted timestamps are rejected
with an error that names the field and the offending value. A window that was never observed
(a collection gap) is simply absent from the input and becomes NaN on the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class InvalidSeriesError(ValueError):
    """Raised when demand history cannot be used; the message names the field and the value."""


@dataclass(frozen=True)
class WindowedSeries:
    """Rates (per second) of one model in consecutive windows of `window_s` seconds.

    `values[i]` is the mean rate over `[start + i*window_s, start + (i+1)*window_s)`; NaN marks a
    window with no observation. `prompt_tokens` / `generation_tokens` are optional token rates on the
    same grid.
    """

    model: str
    start: float
    window_s: float
    values: np.ndarray
    prompt_tokens: np.ndarray | None = None
    generation_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise InvalidSeriesError(f"window_s must be > 0, got {self.window_s!r}")
        for field in ("values", "prompt_tokens", "generation_tokens"):
            array = getattr(self, field)
            if array is None:
                continue
            if array.ndim != 1 or len(array) != len(self.values):
                raise InvalidSeriesError(f"{field} must be 1-D with {len(self.values)} windows, got shape {array.shape}")
            observed = array[~np.isnan(array)]
            if np.isinf(observed).any():
                raise InvalidSeriesError(f"{field} contains an infinite value")
            if (observed < 0).any():
                raise InvalidSeriesError(f"{field} contains a negative rate: {float(observed[observed < 0][0])!r}")
        if len(self.values) == 0 or np.isnan(self.values).all():
            raise InvalidSeriesError(f"values of model {self.model!r} hold no observed window")

    @classmethod
    def from_points(
        cls,
        model: str,
        times: Sequence[float] | np.ndarray,
        rates: Sequence[float] | np.ndarray,
        window_s: float,
        prompt_tokens: Sequence[float] | np.ndarray | None = None,
        generation_tokens: Sequence[float] | np.ndarray | None = None,
    ) -> WindowedSeries:
        """Place observed windows (start times and rates) on a regular grid; absent windows become gaps.

        Raises `InvalidSeriesError` for empty input, NaN/infinite/negative rates, unsorted or
        duplicate times, or times that are not on a multiple of `window_s` from the first one.
        """
        if not window_s > 0:
            raise InvalidSeriesError(f"window_s must be > 0, got {window_s!r}")
        t = np.asarray(times, dtype=float)
        if t.size == 0:
            raise InvalidSeriesError(f"times of model {model!r} is empty: no history to forecast from")
        columns = {"rates": rates, "prompt_tokens": prompt_tokens, "generation_tokens": generation_tokens}
        arrays: dict[str, np.ndarray | None] = {}
        for name, column in columns.items():
            if column is None:
                arrays[name] = None
                continue
            a = np.asarray(column, dtype=float)
            if a.shape != t.shape:
                raise InvalidSeriesError(f"{name} has {a.size} values but times has {t.size}")
            bad = ~np.isfinite(a)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidSeriesError(f"{name}[{i}] is {float(a[i])!r}; leave a missing window out instead of passing NaN")
            if (a < 0).any():
                i = int(np.argmax(a < 0))
                raise InvalidSeriesError(f"{name}[{i}] is negative ({float(a[i])!r}); rates must be >= 0")
            arrays[name] = a
        if not np.isfinite(t).all():
            raise InvalidSeriesError("times contains NaN or infinity")
        if (np.diff(t) <= 0).any():
            i = int(np.argmax(np.diff(t) <= 0)) + 1
            raise InvalidSeriesError(f"times must be strictly increasing; times[{i}] = {float(t[i])!r} follows {float(t[i - 1])!r}")
        offsets = (t - t[0]) / window_s
        index = np.rint(offsets).astype(int)
        if not np.allclose(offsets, index, atol=1e-6):
            i = int(np.argmax(~np.isclose(offsets, index, atol=1e-6)))
            raise InvalidSeriesError(f"times[{i}] = {float(t[i])!r} is not on the {window_s} s grid that starts at {float(t[0])!r}")
        grids: dict[str, np.ndarray | None] = {}
        for name, a in arrays.items():
            if a is None:
                grids[name] = None
                continue
            grid = np.full(index[-1] + 1, np.nan)
            grid[index] = a
            grids[name] = grid
        return cls(
            model=model,
            start=float(t[0]),
            window_s=float(window_s),
            values=grids["rates"],  # type: ignore[arg-type]
            prompt_tokens=grids["prompt_tokens"],
            generation_tokens=grids["generation_tokens"],
        )

    def __len__(self) -> int:
        return len(self.values)

    @property
    def end(self) -> float:
        """End time (seconds) of the last window."""
        return self.start + len(self.values) * self.window_s

    def window_start(self, index: int) -> float:
        """Start time (seconds) of window `index`."""
        return self.start + index * self.window_s

    def head(self, n: int) -> WindowedSeries:
        """The first `n` windows (what was known at the end of window `n - 1`)."""
        return self.slice(0, n)

    def slice(self, lo: int, hi: int) -> WindowedSeries:
        """Windows `lo` (inclusive) to `hi` (exclusive)."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[lo:hi]

        return WindowedSeries(
            self.model, self.window_start(lo), self.window_s, self.values[lo:hi],
            cut(self.prompt_tokens), cut(self.generation_tokens),
        )
