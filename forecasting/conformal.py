"""Conformal prediction bands from a forecaster's own recent residuals.

For origin `o` and horizon `h`, the residuals used are those of the origins whose targets were
already observed at `o` (origin `o' <= o - h`), at the same horizon, over the last
`calibration_windows` origins. The forecast quantile is the point forecast plus the empirical
quantile of those residuals. A rolling window (rather than the whole history) makes the band adapt
when the series turns more or less erratic. With `relative=True` residuals are log ratios, so the
band scales with the level of demand.

`recalibrate_every=B` recomputes the residual quantiles only at origins that are multiples of `B`
(each origin uses the quantiles of its block's first origin), which divides the sorting work by `B`.

`adaptive_step=g` > 0 makes the upper quantile's level adaptive (adaptive conformal inference,
Gibbs & Candes 2021): walking through the origins in time order, the miss rate target
`alpha = 1 - tau` is corrected by `g x (alpha - miss)` for every target that has been observed, so
a band that has been missing too often widens and one that covers too much narrows. The level
stays within `tau +- adaptive_range`: unbounded, a level shift drives it to 1 and the band to the
largest residual in the window (the shift itself) until the shift leaves the window.

`y` may hold one series `(T,)` or many `(S, T)`; all series share the origins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecasting.arrays import gather, last_axis_quantiles


@dataclass(frozen=True)
class ConformalBand:
    """Rolling split-conformal quantiles over the last `calibration_windows` origins."""

    calibration_windows: int = 144
    min_residuals: int = 12
    relative: bool = False
    recalibrate_every: int = 1
    adaptive_step: float = 0.0
    adaptive_range: float = 0.09

    def history_needed(self, horizon: int) -> int:
        """Origins of residuals before the first requested origin that the band may use."""
        return self.calibration_windows + horizon + self.recalibrate_every

    def apply(
        self, y: np.ndarray, origins: np.ndarray, points: np.ndarray, taus: Sequence[float], first_output: int = 0
    ) -> np.ndarray:
        """Quantiles `(..., len(origins), horizon, len(taus))` for contiguous `origins` and their `points`.

        NaN where fewer than `min_residuals` residuals are available, and for the first `first_output`
        origins, which then only lend their residuals to the later ones.
        """
        n, horizon = points.shape[-2:]
        steps = np.arange(1, horizon + 1)
        actual = gather(y, origins[:, None] + steps[None, :])
        if self.relative:
            with np.errstate(divide="ignore", invalid="ignore"):
                residuals = np.log(actual / points)
            residuals[~np.isfinite(residuals)] = np.nan
        else:
            residuals = actual - points
        # Origins are recalibrated at multiples of B; each origin uses its block's first origin.
        b = self.recalibrate_every
        wanted = origins[first_output:]
        block_start = np.maximum(wanted - wanted % b, wanted[0])
        starts, block_of = np.unique(block_start, return_inverse=True)
        w = self.calibration_windows
        out = np.full(points.shape + (len(taus),), np.nan)
        for h in steps:
            # Residual of origin index j is known at origin index i when j <= i - h.
            newest = starts - origins[0] - h
            index = newest[:, None] - np.arange(w)[None, ::-1]
            windows = np.sort(gather(residuals[..., h - 1], index), axis=-1)  # (..., blocks, w), NaNs last
            q = last_axis_quantiles(windows, taus, self.min_residuals, presorted=True)[..., block_of, :]
            point = points[..., first_output:, h - 1, None]
            out[..., first_output:, h - 1, :] = point * np.exp(q) if self.relative else point + q
            if self.adaptive_step > 0 and taus[-1] > 0.5:
                out[..., first_output:, h - 1, -1] = self._adaptive_upper(
                    windows, block_of, points[..., first_output:, h - 1], actual[..., first_output:, h - 1], h, taus[-1]
                )
        return np.maximum(out, 0.0)

    def _adaptive_upper(
        self, windows: np.ndarray, block_of: np.ndarray, points: np.ndarray, actual: np.ndarray, h: int, tau: float
    ) -> np.ndarray:
        """The `tau` quantile band with its level corrected online by the misses seen so far: `(..., origins)`.

        `windows`: the residual windows of each block, sorted along the last axis.
        """
        lead, n = points.shape[:-1], points.shape[-1]
        series = int(np.prod(lead))
        ordered = windows.reshape(series, windows.shape[-2], windows.shape[-1])  # sorted by the caller
        counts = (~np.isnan(windows)).sum(axis=-1).reshape(series, -1)
        last = np.maximum(counts - 1, 0)
        points = points.reshape(series, n)
        actual = actual.reshape(series, n)
        valid = counts[:, block_of] >= self.min_residuals
        observed = valid & ~np.isnan(actual) & ~np.isnan(points)
        rows = np.arange(series)
        target_miss = 1 - tau
        alpha = np.full(series, target_miss)
        lowest, highest = max(tau - self.adaptive_range, 0.0), min(tau + self.adaptive_range, 1.0)
        misses = np.zeros((series, n))
        q = np.empty((series, n))
        for k in range(n):
            if k >= h:  # the target of origin k - h has just been observed
                alpha += self.adaptive_step * (target_miss - misses[:, k - h]) * observed[:, k - h]
                # Bounded like the level, so that alpha does not wind up while the level is pinned.
                alpha = np.clip(alpha, 1 - highest, 1 - lowest)
            block = block_of[k]
            top = last[:, block]
            position = np.minimum(np.maximum(1 - alpha, lowest), highest) * top
            lower = position.astype(np.intp)
            low = ordered[rows, block, lower]
            high = ordered[rows, block, np.minimum(lower + 1, top)]
            q[:, k] = low + (position - lower) * (high - low)
            band = points[:, k] * np.exp(q[:, k]) if self.relative else points[:, k] + q[:, k]
            misses[:, k] = actual[:, k] > band
        out = points * np.exp(q) if self.relative else points + q
        out = np.where(valid, out, np.nan)
        return out.reshape(lead + (n,))
