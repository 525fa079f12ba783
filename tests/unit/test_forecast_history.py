"""A forecaster's history survives a new leader or a restarted controller: saved to the
ModelAutoscaler's status, restored into a fresh forecaster that then forecasts as the old one did."""
from __future__ import annotations

import json

import numpy as np
import pytest

from autoscaler.controller.status import decode_forecast_history, encode_forecast_history
from forecasting.live import WINDOW_S
from tests.unit.test_controller_forecast import T0, _forecasting_spec
from tests.unit.test_controller_loop import _object
from tests.unit.test_prewarm_background import _same_forecast
from tests.unit.test_prewarm_prewarmer import WINDOW, feed, make_prewarmer


def _daily(days: int) -> list[float]:
    rng = np.random.default_rng(7)
    hours = np.arange(days * 24)
    return list(10 + 5 * np.sin(2 * np.pi * hours / 24) + rng.gamma(2.0, 0.5, size=hours.size))


def test_a_restored_history_forecasts_as_the_forecaster_that_saved_it():
    rates = _daily(4)
    saved = make_prewarmer(refit_every_windows=1)      # both fit at the close compared
    n, last = len(rates), rates[-1]
    feed(saved, rates[:-1])
    saved.observe("m", (n - 1) * WINDOW, last, last * 100, last * 10)   # the windows before are complete
    restored = make_prewarmer(refit_every_windows=1)
    restored.restore_history("m", json.loads(json.dumps(saved.history("m"))))
    restored.observe("m", (n - 1) * WINDOW, last, last * 100, last * 10)
    for p in (saved, restored):
        p.observe("m", n * WINDOW, 1.0, 100.0, 10.0)                     # closes the last window
    a, b = (p.demand_forecast("m", now=len(rates) * WINDOW) for p in (saved, restored))
    assert not a.method.startswith("fallback")
    _same_forecast(a, b)


def test_windows_missed_while_no_controller_ran_are_gaps():
    p = make_prewarmer()
    p.restore_history("m", {"window_s": WINDOW, "first_window": 10, "rates": [4.0, None, 6.0],
                            "prompt": [400.0, None, 600.0], "generation": [40.0, None, 60.0]})
    p.observe("m", 16 * WINDOW + 1, 8.0, 800.0, 80.0)       # windows 13-15 had no controller
    p.observe("m", 17 * WINDOW + 1, 8.0, 800.0, 80.0)       # closes window 16
    history = p.history("m")
    assert history["first_window"] == 10
    assert history["rates"] == [4.0, None, 6.0, None, None, None, 8.0]


@pytest.mark.parametrize("change, names", [
    ({"window_s": 300.0}, "window_s"),
    ({"first_window": "10"}, "first_window"),
    ({"rates": [4.0, -1.0, 6.0]}, "rates[1]"),
    ({"prompt": [400.0, float("nan"), 600.0]}, "prompt[1]"),
    ({"generation": [40.0]}, "lengths"),
    ({"rates": "4,5,6"}, "rates"),
])
def test_a_bad_history_is_refused_naming_the_field_and_changes_nothing(change, names):
    p = make_prewarmer()
    feed(p, [3.0, 3.0])
    before = p.history("m")
    good = {"window_s": WINDOW, "first_window": 10, "rates": [4.0, 5.0, 6.0], "prompt": [400.0, 500.0, 600.0],
            "generation": [40.0, 50.0, 60.0]}
    with pytest.raises(ValueError, match=names.replace("[", r"\[").replace("]", r"\]")):
        p.restore_history("m", {**good, **change})
    assert p.history("m") == before


def test_status_carries_the_history_compactly_and_reads_it_back():
    history = {"window_s": WINDOW_S, "first_window": 2900, "rates": [1.0 / 3 + i % 7 for i in range(1300)],
               "prompt": [None] + [1000.0 + i for i in range(1299)], "generation": [250.0] * 1300}
    stored = encode_forecast_history(history)
    assert len(json.dumps(stored)) < 20_000
    back = decode_forecast_history(json.loads(json.dumps(stored)))
    assert back["prompt"][0] is None and back["first_window"] == 2900
    np.testing.assert_allclose(back["rates"], history["rates"], rtol=1e-5)
    with pytest.raises(ValueError, match="forecastHistory"):
        decode_forecast_history({"encoding": "json+zlib+base64", "data": "not base64!"})


def test_a_new_controller_restores_the_history_from_status_and_writes_it_once_per_window(controller):
    rates = _daily(2)
    old = make_prewarmer()
    feed(old, rates)
    history = {**old.history("m"), "window_s": WINDOW_S}
    obj = _object(_forecasting_spec(), name="fc")
    obj["status"] = {"forecastHistory": encode_forecast_history(history)}
    model = controller._model(obj)
    assert model.prewarmer.history("m")["rates"] == pytest.approx(history["rates"], rel=1e-5)   # 6 digits kept
    fields, ends = controller._state_to_save(model, T0)
    assert "forecastHistory" in fields and ends == history["first_window"] + len(history["rates"])
    model.history_saved = ends
    fields, _ = controller._state_to_save(model, T0)
    assert "forecastHistory" not in fields and "policyState" in fields    # nothing new: only the policy's state
    first_open = ends * WINDOW_S
    model.prewarmer.observe("m", first_open + 1, 5.0, 500.0, 50.0)
    model.prewarmer.observe("m", first_open + WINDOW_S + 1, 5.0, 500.0, 50.0)   # a window closes
    fields, ends = controller._state_to_save(model, T0)
    assert decode_forecast_history(fields["forecastHistory"])["rates"][-1] == pytest.approx(5.0)


def test_a_history_that_cannot_be_read_leaves_the_model_forecasting_from_scratch(controller):
    errors = []
    controller._error = lambda where, exc: errors.append((where, str(exc)))
    obj = _object(_forecasting_spec(), name="fc")
    obj["status"] = {"forecastHistory": {"encoding": "json+zlib+base64", "data": "eJw="}}
    model = controller._model(obj)
    assert model.prewarmer is not None and model.prewarmer.history("m") is None
    assert errors and "forecast history ns/fc" in errors[0][0] and "forecastHistory" in errors[0][1]
