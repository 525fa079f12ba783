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

`rise_windows=r` > 0 makes the band regime-conditional (Mondrian conformal): an origin is *rising*
when its value exceeds `(1 + rise_threshold)` x the value `r` windows earlier, both known at the
origin. Rising origins take their quantiles from the residuals of earlier rising origins only, the
others from the others, so ramps get the wider upper band their residuals call for without widening
the band everywhere. A regime with fewer than `min_residuals` residuals in the window uses all of them.

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
    rise_windows: int = 0
    rise_threshold: float = 0.1

    def history_needed(self, horizon: int) -> int:
        """Origins of residuals before the first requested origin that the band may use."""
        return self.calibration_windows + horizon + self.recalibrate_every

    def rising(self, y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Whether each origin is in the rising regime, `(..., len(origins))`; all False when regimes are off."""
        if self.rise_windows <= 0:
            return np.zeros(y.shape[:-1] + (len(origins),), dtype=bool)
        now = gather(y, origins)
        before = gather(y, origins - self.rise_windows)
        with np.errstate(invalid="ignore"):
            return now > (1 + self.rise_threshold) * before

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
        regime = self.rising(y, origins)  # (..., origins)
        regime_out = regime[..., first_output:].astype(np.intp)
        out = np.full(points.shape + (len(taus),), np.nan)
        for h in steps:
            # Residual of origin index j is known at origin index i when j <= i - h.
            newest = starts - origins[0] - h
            index = newest[:, None] - np.arange(w)[None, ::-1]
            windows = self._regime_windows(gather(residuals[..., h - 1], index), gather(regime, index))
            q = last_axis_quantiles(windows, taus, self.min_residuals, presorted=True)  # (..., blocks, regimes, taus)
            q = np.take_along_axis(q[..., block_of, :, :], regime_out[..., None, None], axis=-2)[..., 0, :]
            point = points[..., first_output:, h - 1, None]
            out[..., first_output:, h - 1, :] = point * np.exp(q) if self.relative else point + q
            if self.adaptive_step > 0 and taus[-1] > 0.5:
                out[..., first_output:, h - 1, -1] = self._adaptive_upper(
                    windows, block_of, regime_out, points[..., first_output:, h - 1], actual[..., first_output:, h - 1], h, taus[-1]
                )
        return np.maximum(out, 0.0)

    def _regime_windows(self, residuals: np.ndarray, rising: np.ndarray) -> np.ndarray:
        """Sorted residual windows per regime, `(..., blocks, regimes, w)` with NaNs last.

        One regime (all residuals) when regimes are off; else [steady, rising], and a regime with too
        few residuals takes all of them.
        """
        pooled = np.sort(residuals, axis=-1)
        if self.rise_windows <= 0:
            return pooled[..., None, :]
        rising = rising == 1  # NaN (index outside the series) counts as steady
        per_regime = []
        for member in (~rising, rising):
            own = np.sort(np.where(member, residuals, np.nan), axis=-1)
            enough = (~np.isnan(own)).sum(axis=-1, keepdims=True) >= self.min_residuals
            per_regime.append(np.where(enough, own, pooled))
        return np.stack(per_regime, axis=-2)

    def _adaptive_upper(
        self, windows: np.ndarray, block_of: np.ndarray, regime: np.ndarray, points: np.ndarray, actual: np.ndarray,
        h: int, tau: float,
    ) -> np.ndarray:
        """The `tau` quantile band with its level corrected online by the misses seen so far: `(..., origins)`.

        `windows`: the residual windows of each block and regime `(..., blocks, regimes, w)`, sorted
        along the last axis; `regime`: each origin's regime index. The level is shared by the regimes.
        """
        lead, n = points.shape[:-1], points.shape[-1]
        series = int(np.prod(lead))
        regimes = windows.shape[-2]
        ordered = windows.reshape(series, windows.shape[-3], regimes, windows.shape[-1])  # sorted by the caller
        counts = (~np.isnan(ordered)).sum(axis=-1)  # (series, blocks, regimes)
        last = np.maximum(counts - 1, 0)
        points = points.reshape(series, n)
        actual = actual.reshape(series, n)
        regime = np.broadcast_to(regime, lead + (n,)).reshape(series, n)
        rows = np.arange(series)
        valid = counts[rows[:, None], block_of[None, :], regime] >= self.min_residuals
        observed = valid & ~np.isnan(actual) & ~np.isnan(points)
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
            block, now = block_of[k], regime[:, k]
            top = last[rows, block, now]
            position = np.minimum(np.maximum(1 - alpha, lowest), highest) * top
            lower = position.astype(np.intp)
            low = ordered[rows, block, now, lower]
            high = ordered[rows, block, now, np.minimum(lower + 1, top)]
            q[:, k] = low + (position - lower) * (high - low)
            band = points[:, k] * np.exp(q[:, k]) if self.relative else points[:, k] + q[:, k]
            misses[:, k] = actual[:, k] > band
        out = points * np.exp(q) if self.relative else points + q
        out = np.where(valid, out, np.nan)
        return out.reshape(lead + (n,))
