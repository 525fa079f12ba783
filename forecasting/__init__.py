"""warmscale forecasting: per-model demand forecasts and the pre-warm planner.

* `series.WindowedSeries`: validated demand history on a regular window grid (gaps are NaN).
* `ensemble.EnsembleForecaster`: members chosen per horizon by a rolling-origin backtest, P50/P90;
  `fit` and `forecast_many` take many series `(S, T)` at once.
* `planner.PrewarmPlanner`: forecast quantile at now + cold start -> `types.ReplicaFloor`.
* `prewarm.ForecastPrewarmer`: the per-interval object the controller and the simulator call.
* `warmpool.plan_warm_pool`: which checkpoints each node's warm pool stages, from the forecast.
* `history` / `traces`: demand history from Prometheus range queries and from trace files.
"""
