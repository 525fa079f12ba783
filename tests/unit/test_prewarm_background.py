"""A window close's fit and forecast off the observing caller's path (`run_refresh`): the controller's
ticks stay short, and what lands is what the inline path computes."""
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.unit.test_prewarm_prewarmer import WINDOW, feed, make_prewarmer


class _GatedFits:
    """Wraps a forecaster's fit: each fit waits for the gate, and may be told to fail."""

    def __init__(self, forecaster):
        self.fit, self.gate, self.fail, self.calls = forecaster.fit, threading.Event(), False, 0
        forecaster.fit = self

    def __call__(self, y, **kw):
        self.calls += 1
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("fit failed on purpose")
        return self.fit(y, **kw)


def _drain(pool: ThreadPoolExecutor) -> None:
    pool.submit(lambda: None).result(timeout=30)


def _same_forecast(a, b):
    assert (a.target_time, a.method) == (b.target_time, b.method)
    np.testing.assert_allclose([a.request_rate_p50, a.request_rate_p90, a.prompt_tokens_p90],
                               [b.request_rate_p50, b.request_rate_p90, b.prompt_tokens_p90])


def test_a_slow_fit_leaves_the_closing_call_fast_and_lands_what_inline_computes():
    rng = np.random.default_rng(3)
    rates = list(5 + rng.gamma(2.0, 1.0, size=40))
    with ThreadPoolExecutor(max_workers=1) as pool:
        background = make_prewarmer(run_refresh=pool.submit)
        fits = _GatedFits(background.forecaster)
        inline = make_prewarmer()
        feed(inline, rates)
        feed(background, rates[:-1])
        started = time.perf_counter()
        background.observe("m", (len(rates) - 1) * WINDOW, rates[-1], rates[-1] * 100, rates[-1] * 10)
        assert time.perf_counter() - started < 0.5            # the fit waits behind the gate, not in observe()
        assert background.demand_forecast("m", now=len(rates) * WINDOW) is None
        fits.gate.set()
        _drain(pool)
        for now in (len(rates) * WINDOW, (len(rates) + 0.5) * WINDOW):
            _same_forecast(background.demand_forecast("m", now), inline.demand_forecast("m", now))
        assert fits.calls >= 1


def test_until_a_close_lands_the_previous_forecast_stands_and_it_is_dated_by_its_own_window():
    rates = [6.0] * 30 + [12.0]
    with ThreadPoolExecutor(max_workers=1) as pool:
        p = make_prewarmer(run_refresh=pool.submit)
        fits = _GatedFits(p.forecaster)
        fits.gate.set()
        feed(p, rates[:30])
        _drain(pool)
        before = p.demand_forecast("m", now=30 * WINDOW)
        fits.gate.clear()
        held = threading.Event()
        pool.submit(held.wait, 30)                              # the worker is busy: the next close queues
        feed(p, rates[30:], start=30 * WINDOW)
        p.observe("m", 31 * WINDOW, 12.0, 1200.0, 120.0)         # closes window 30 (the 12 req/s one)
        stale = p.demand_forecast("m", now=31 * WINDOW)
        assert stale.request_rate_p50 == pytest.approx(before.request_rate_p50)
        held.set()
        fits.gate.set()
        _drain(pool)
        assert p.demand_forecast("m", now=31 * WINDOW).request_rate_p50 == pytest.approx(12.0, rel=0.2)


def test_a_failed_background_fit_is_logged_and_the_model_keeps_forecasting(caplog):
    with ThreadPoolExecutor(max_workers=1) as pool:
        p = make_prewarmer(run_refresh=pool.submit, refit_every_windows=1)
        fits = _GatedFits(p.forecaster)
        fits.gate.set()
        feed(p, [6.0] * 10)
        _drain(pool)
        kept = p.demand_forecast("m", now=10 * WINDOW)
        fits.fail = True
        with caplog.at_level(logging.ERROR, logger="warmscale.forecast"):
            feed(p, [6.0], start=10 * WINDOW)
            p.observe("m", 11 * WINDOW, 6.0, 600.0, 60.0)
            _drain(pool)
        assert any("model 'm'" in r.getMessage() and r.exc_info for r in caplog.records)
        assert p.demand_forecast("m", now=10 * WINDOW) == kept
        fits.fail = False
        feed(p, [6.0], start=11 * WINDOW)
        p.observe("m", 12 * WINDOW, 6.0, 600.0, 60.0)
        _drain(pool)
        assert p.demand_forecast("m", now=12 * WINDOW).target_time == 12 * WINDOW + 150.0
