"""What local mode builds for a model before any engine starts: its rates are taken over the window
the model's policy is configured for, as the controller does."""
from __future__ import annotations

import pytest

from autoscaler.local.config import load_config
from autoscaler.local.runner import LocalRunner
from tests.local.conftest import model_entry, write_config


@pytest.mark.parametrize("settings, window", [({}, 60.0), ({"rate_window_s": 10}, 10.0)])
def test_rates_are_taken_over_the_policy_rate_window(tmp_path, settings, window):
    cfg = write_config(tmp_path / "local.yaml", state_dir=str(tmp_path / "state"), router={"port": 0},
                       models=[model_entry(tmp_path, policy={"settings": settings})])
    runner = LocalRunner(load_config(cfg))
    runner.open()
    try:
        assert runner.models["tiny"].builder.rate_window_s == window
    finally:
        runner.stop(drain_s=0)
