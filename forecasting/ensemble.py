"""The ensemble forecaster: members chosen per horizon by a rolling-origin backtest.

`EnsembleForecaster.fit(y, end)` looks at the last `selection_windows` origins whose targets are
already known, scores every member by its P90 pinball loss there (each origin forecast only from the
data before it), keeps per horizon the `top_k` best members (within `tolerance` of the best) and
averages their quantiles with weights proportional to score^-`weight_power`. Averaging several good
members beat picking the single best on the ServeGen backtest (bench/forecast.py), because the
scores of one day of origins are noisy. Histories too short to score members fall back to the last
value with a conformal band, and with fewer windows still to the last value with a fixed relative
margin (`FittedEnsemble.method` says which).

`fit` takes one series `(T,)` or many `(S, T)` of the same length: members, scores and weights are
then computed for all series in array calls (each series still gets its own choice of members), and
`forecast_many` does that in chunks. The one-series API is the same code with `S = 1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from forecasting.arrays import forward_fill, pinball_loss
from forecasting.boosting import BoosterCache, GradientBoostingMember
from forecasting.conformal import ConformalBand
from forecasting.members import (
    TAUS,
    ConformalMember,
    ExponentialSmoothingPoint,
    LagLinearMember,
    LagQuantileRegression,
    Member,
    SeasonalLibraryMember,
    SeasonalNaivePoint,
    SeasonalRatioPoint,
    naive_point,
)

MEMBER_NAMES = (
    "naive",
    "seasonal_naive_daily",
    "seasonal_naive_weekly",
    "exp_smoothing",
    "seasonal_ratio",
    "lag_quantile_regression",
    "lag_linear",
    "gradient_boosting",
    "mstl",
)
# MSTL and the quantile regression fit one series at a time (about 0.2 s and 10 ms per series), so
# they are opt-in; the default members evaluate many series in one array call. The batched
# least-squares `lag_linear` took the quantile regression's place: on ServeGen days 5-7 (tuning span,
# before the judged days 8-10) it scored better (bench/forecast.py).
DEFAULT_MEMBERS = tuple(name for name in MEMBER_NAMES if name not in ("mstl", "lag_quantile_regression"))
# members whose library is an extra (`warmscale[forecast]`); the others need numpy only
MEMBER_LIBRARIES = {"exp_smoothing": "statsforecast", "mstl": "statsforecast", "gradient_boosting": "lightgbm"}


def installed_members(members: tuple[str, ...] = DEFAULT_MEMBERS) -> tuple[str, ...]:
    """`members` less those whose library is not installed (the controller's image has the base install)."""
    import importlib.util

    return tuple(m for m in members if m not in MEMBER_LIBRARIES or importlib.util.find_spec(MEMBER_LIBRARIES[m]))


class EnsembleConfig(BaseModel):
    """Settings of the ensemble forecaster (validated; errors name the field and the value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon: int = Field(6, ge=1, description="windows ahead to forecast")
    period: int = Field(144, ge=2, description="windows per day (the daily season)")
    members: tuple[str, ...] = Field(DEFAULT_MEMBERS, min_length=1, description=f"subset of {MEMBER_NAMES}")
    selection_windows: int = Field(144, ge=6, description="origins scored by the rolling-origin backtest")
    top_k: int = Field(4, ge=1, description="members averaged per horizon")
    tolerance: float = Field(1.0, ge=0, description="only members within (1 + tolerance) x the best score are averaged")
    weight_power: float = Field(2.0, ge=0, description="members are weighted by score^-power (0: plain mean)")
    calibration_windows: int = Field(144, ge=6, description="residuals per conformal band")
    fallback_margin: float = Field(0.25, ge=0, description="P90 = (1 + margin) x last value when history is too short")
    library_refit_windows: int = Field(36, ge=1, description="origins between refits of the (slow) MSTL member")
    adaptive_step: float = Field(0.05, ge=0, description="adaptive-conformal step of the members' P90 level per origin (0: fixed level)")
    recalibrate_every: int = Field(12, ge=1, description="origins between recomputations of the members' conformal quantiles")
    regime_bands: bool = Field(True, description="separate conformal bands for origins whose past hour rose by more than regime_rise (Mondrian)")
    regime_rise: float = Field(0.1, ge=0, description="relative rise over the past hour that puts an origin in the rising regime")

    def model_post_init(self, __context: object) -> None:
        unknown = [m for m in self.members if m not in MEMBER_NAMES]
        if unknown:
            raise ValueError(f"members: unknown member {unknown[0]!r}; choose from {MEMBER_NAMES}")


def build_members(config: EnsembleConfig, boosters: BoosterCache | None = None) -> list[Member]:
    """Instantiate the configured members; `boosters` keeps trained gradient-boosting models between fits."""
    p = config.period
    band = dict(calibration_windows=config.calibration_windows, recalibrate_every=config.recalibrate_every,
                adaptive_step=config.adaptive_step, rise_windows=max(1, round(p / 24)) if config.regime_bands else 0,
                rise_threshold=config.regime_rise)
    additive = ConformalBand(**band)
    relative = ConformalBand(**band, relative=True)
    factories = {
        "naive": lambda: ConformalMember("naive", naive_point, additive, 1),
        "seasonal_naive_daily": lambda: ConformalMember("seasonal_naive_daily", SeasonalNaivePoint(p), additive, p),
        "seasonal_naive_weekly": lambda: ConformalMember("seasonal_naive_weekly", SeasonalNaivePoint(7 * p), additive, 7 * p),
        "exp_smoothing": lambda: ConformalMember("exp_smoothing", ExponentialSmoothingPoint(), additive, 3),
        "seasonal_ratio": lambda: ConformalMember("seasonal_ratio", SeasonalRatioPoint(p), relative, p + 2),
        "lag_quantile_regression": lambda: LagQuantileRegression(p),
        "lag_linear": lambda: LagLinearMember(p, additive),
        "gradient_boosting": lambda: GradientBoostingMember(p, cache=boosters if boosters is not None else BoosterCache()),
        "mstl": lambda: SeasonalLibraryMember(p, refit_windows=config.library_refit_windows),
    }
    return [factories[name]() for name in config.members]


@dataclass
class FittedEnsemble:
    """The members chosen per series and horizon at fit time; `paths` forecasts from any later origin.

    Fitted on one series `(T,)` it forecasts that series; fitted on `(S, T)` it forecasts all of
    them at once (`methods` then names each series' members).
    """

    config: EnsembleConfig
    members: list[Member]
    weights: np.ndarray  # (series, member, horizon): weight of each member; 0 where not chosen
    methods: list[str]  # per series
    batched: bool = False
    scores: np.ndarray | None = None  # (series, member, horizon): P90 pinball at selection; inf where unscored
    latest_origin: int | None = None  # the newest origin at fit time
    latest: dict[int, np.ndarray] = field(default_factory=dict)  # member index -> its quantiles (series, horizon, 2) there

    @property
    def method(self) -> str:
        """The method of the first (for a single series: the only) series."""
        return self.methods[0]

    def paths(self, y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Quantiles `(len(origins), horizon, 2)` (P50, P90) from each contiguous origin; `(S, ...)` when batched."""
        batch = y if self.batched else y[None]
        out = _combine(self, batch, origins)
        return out if self.batched else out[0]


def _combine(fitted: FittedEnsemble, y: np.ndarray, origins: np.ndarray) -> np.ndarray:
    config = fitted.config
    shape = (len(y), len(origins), config.horizon, len(TAUS))
    total = np.zeros(shape)
    weighted = np.zeros(shape)
    # Forecasts from the fit's newest origin only ever use data up to it, so they can be reused.
    reuse = len(origins) == 1 and origins[0] == fitted.latest_origin
    for i, member in enumerate(fitted.members):
        w = fitted.weights[:, i, :]
        if not (w > 0).any():
            continue
        paths = fitted.latest[i][:, None] if reuse and i in fitted.latest else member.paths(y, origins, config.horizon)
        w = w[:, None, :, None]
        present = ~np.isnan(paths)
        total += present * w
        weighted += np.where(present, paths, 0.0) * w
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, weighted / total, np.nan)
    # Origins where no chosen member could answer take the last value with the fallback margin.
    missing = np.isnan(out)
    if missing.any():
        last = forward_fill(y)[:, origins]
        fill = np.stack([last, last * (1 + config.fallback_margin)], axis=-1)[:, :, None, :]
        out = np.where(missing, np.broadcast_to(fill, out.shape), out)
    out[..., 1] = np.maximum(out[..., 1], out[..., 0])
    return out


class EnsembleForecaster:
    """Fits the ensemble on a history and forecasts P50/P90 `horizon` windows ahead."""

    def __init__(self, config: EnsembleConfig | None = None, boosters: BoosterCache | None = None) -> None:
        """`boosters`: where trained gradient-boosting models are kept for reuse (default: 8 entries,
        enough for backtests that fit at many ends)."""
        self.config = config or EnsembleConfig()
        self._boosters = boosters if boosters is not None else BoosterCache()

    def fit(self, y: np.ndarray, end: int | None = None, fleet: np.ndarray | None = None) -> FittedEnsemble:
        """Choose members on `y[..., :end]` (default: all of it); `y` is one series `(T,)` or many `(S, T)`.

        `fleet` `(F, T)`: the series that global members (gradient boosting) learn from, when `y` is a
        part of a larger fleet; default `y` itself.
        """
        cfg = self.config
        batched = y.ndim > 1
        history = (y if batched else y[None])[:, : (y.shape[-1] if end is None else end)]
        series, end = history.shape
        learn_from = history if fleet is None else np.atleast_2d(fleet)[:, :end]

        members = build_members(cfg, self._boosters)
        horizon = cfg.horizon

        def fit_member(member: Member, until: int) -> None:
            fit = getattr(member, "fit", None)
            if fit is not None:
                fit(learn_from if getattr(member, "global_model", False) else history, until, horizon)

        too_short = (~np.isnan(history)).sum(axis=1) < 2
        last_scored = end - 1 - horizon
        first_scored = last_scored - cfg.selection_windows + 1
        runnable = [i for i, m in enumerate(members) if m.min_history(horizon) <= first_scored]
        if too_short.all() or not runnable:
            return self._short_history(cfg, members, series, end, batched, too_short)
        for i in runnable:
            # Fit on what was known at the first scored origin, so scoring stays out of sample.
            fit_member(members[i], first_scored + 1)
        origins = np.arange(first_scored, last_scored + 1)
        steps = np.arange(1, horizon + 1)
        actual = history[:, origins[:, None] + steps[None, :]]
        table = np.full((series, len(members), horizon), np.inf)
        # Members without fitted coefficients are evaluated up to the newest origin in the same call,
        # which leaves their forecast from it ready for `FittedEnsemble.latest`.
        latest: dict[int, np.ndarray] = {}
        through_newest = np.arange(first_scored, end)
        for i in runnable:
            if hasattr(members[i], "fit"):
                p90 = members[i].paths(history, origins, horizon)[..., 1]
            else:
                paths = members[i].paths(history, through_newest, horizon)
                latest[i] = paths[:, -1]
                p90 = paths[:, : len(origins), :, 1]
            loss = pinball_loss(actual, p90, TAUS[1])
            ok = ~np.isnan(loss)
            count = ok.sum(axis=1)
            mean = np.where(ok, loss, 0.0).sum(axis=1) / np.maximum(count, 1)
            table[:, i, :] = np.where(count >= cfg.selection_windows // 4, mean, np.inf)
        weights = self._weights(table, runnable[0])
        weights[too_short] = 0.0
        for i in np.flatnonzero((weights > 0).any(axis=(0, 2))):
            if hasattr(members[i], "fit"):
                fit_member(members[i], end)
                latest[i] = members[i].paths(history, np.array([end - 1]), horizon)[:, 0]
        methods = []
        for row in range(series):
            if too_short[row]:
                methods.append("fallback:last_value")
                continue
            names = sorted(members[i].name for i in np.flatnonzero((weights[row] > 0).any(axis=1)))
            methods.append("ensemble:" + "+".join(names))
        return FittedEnsemble(cfg, members, weights, methods, batched, table, end - 1, latest)

    def _weights(self, table: np.ndarray, default_member: int) -> np.ndarray:
        """Per series and horizon: the `top_k` best members within `tolerance` of the best, weighted score^-power."""
        cfg = self.config
        best = table.min(axis=1, keepdims=True)
        rank = np.argsort(np.argsort(table, axis=1, kind="stable"), axis=1, kind="stable")
        keep = np.isfinite(table) & (table <= (1 + cfg.tolerance) * best) & (rank < cfg.top_k)
        scores = np.where(keep, table, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            top = np.nan_to_num(np.nanmax(np.where(keep, scores, -np.inf), axis=1, keepdims=True), neginf=0.0)
            # A perfect member (score 0) takes nearly all the weight instead of dividing by zero.
            base = np.maximum(scores, 1e-9 * top)
            w = np.where(keep, np.where(top > 0, base, 1.0) ** -cfg.weight_power, 0.0)
        nothing = ~keep.any(axis=1)  # (series, horizon): no member could be scored
        w[:, default_member, :] = np.where(nothing, 1.0, w[:, default_member, :])
        return w / w.sum(axis=1, keepdims=True)

    def _short_history(
        self, cfg: EnsembleConfig, members: list[Member], series: int, end: int, batched: bool, too_short: np.ndarray
    ) -> FittedEnsemble:
        """Too little history to score members: use the last value with a conformal band if it can form one."""
        band = ConformalBand(calibration_windows=cfg.calibration_windows, min_residuals=3)
        if end - 1 - cfg.horizon >= band.min_residuals and not too_short.all():
            naive = ConformalMember("naive", naive_point, band, 1)
            weights = np.ones((series, 1, cfg.horizon))
            weights[too_short] = 0.0
            methods = ["fallback:last_value" if short else "fallback:naive_conformal" for short in too_short]
            return FittedEnsemble(cfg, [naive], weights, methods, batched)
        return FittedEnsemble(cfg, [], np.zeros((series, 0, cfg.horizon)), ["fallback:last_value"] * series, batched)

    def forecast(self, y: np.ndarray) -> tuple[np.ndarray, str]:
        """Fit on all of `y` and return the quantiles `(horizon, 2)` from its last window, and the method."""
        fitted = self.fit(y)
        return fitted.paths(y, np.array([y.shape[-1] - 1]))[..., 0, :, :], fitted.method

    def forecast_many(self, y: np.ndarray, chunk: int = 128) -> tuple[np.ndarray, list[str]]:
        """Fit on every series of `y` `(S, T)`; quantiles `(S, horizon, 2)` from the last window, and methods.

        Series are fitted `chunk` at a time in array calls; chunks keep the working arrays small
        enough to stay in cache, which is faster than one call over thousands of series. Global
        members learn from the whole fleet once, not once per chunk.
        """
        if y.ndim != 2:
            raise ValueError(f"y: expected a 2-D array (series, windows), got shape {y.shape}")
        quantiles, methods = [], []
        for start in range(0, len(y), chunk):
            block = y[start : start + chunk]
            fitted = self.fit(block, fleet=y)
            quantiles.append(fitted.paths(block, np.array([y.shape[-1] - 1]))[:, 0])
            methods += fitted.methods
        return np.concatenate(quantiles), methods
