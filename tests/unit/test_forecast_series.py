import math

import numpy as np
import pytest

from forecasting.series import InvalidSeriesError, WindowedSeries


def test_absent_windows_become_gaps_on_the_grid():
    s = WindowedSeries.from_points("m", [100, 160, 280], [1.0, 2.0, 4.0], window_s=60)
    assert s.start == 100
    assert len(s) == 4
    assert s.values[0] == 1.0 and s.values[1] == 2.0 and math.isnan(s.values[2]) and s.values[3] == 4.0
    assert s.end == 100 + 4 * 60


def test_empty_input_is_rejected():
    with pytest.raises(InvalidSeriesError, match="times of model 'm' is empty"):
        WindowedSeries.from_points("m", [], [], window_s=60)


def test_nan_rate_is_rejected_with_its_index():
    with pytest.raises(InvalidSeriesError, match=r"rates\[1\] is nan"):
        WindowedSeries.from_points("m", [0, 60], [1.0, float("nan")], window_s=60)


def test_negative_rate_is_rejected_with_its_value():
    with pytest.raises(InvalidSeriesError, match=r"rates\[2\] is negative \(-3.0\)"):
        WindowedSeries.from_points("m", [0, 60, 120], [1.0, 2.0, -3.0], window_s=60)


def test_negative_token_rate_is_rejected():
    with pytest.raises(InvalidSeriesError, match="prompt_tokens"):
        WindowedSeries.from_points("m", [0, 60], [1.0, 2.0], 60, prompt_tokens=[5.0, -1.0])


def test_unsorted_and_off_grid_times_are_rejected():
    with pytest.raises(InvalidSeriesError, match="strictly increasing"):
        WindowedSeries.from_points("m", [0, 120, 60], [1.0, 1.0, 1.0], window_s=60)
    with pytest.raises(InvalidSeriesError, match="not on the 60"):
        WindowedSeries.from_points("m", [0, 90], [1.0, 1.0], window_s=60)


def test_all_gap_array_is_rejected():
    with pytest.raises(InvalidSeriesError, match="no observed window"):
        WindowedSeries("m", 0.0, 60.0, np.array([np.nan, np.nan]))


def test_head_keeps_what_was_known():
    s = WindowedSeries.from_points("m", [0, 60, 120], [1.0, 2.0, 3.0], window_s=60)
    assert list(s.head(2).values) == [1.0, 2.0]
    assert s.slice(1, 3).start == 60
