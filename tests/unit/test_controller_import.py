"""The controller and the cluster router install and import light: no torch, vLLM, LightGBM or matplotlib in their process."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "vllm", "lightgbm", "statsforecast", "matplotlib", "pandas")


def test_controller_imports_none_of_the_heavy_packages():
    code = ("import json, sys; import autoscaler.controller.loop, autoscaler.controller.cli, autoscaler.controller.__main__, autoscaler.router.cli, autoscaler.router.cluster; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
