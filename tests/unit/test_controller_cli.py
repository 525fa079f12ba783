"""`warmscale controller`'s command line: bad input exits with the documented code and a message that
names what is wrong, never a traceback."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("content, named", [("nodes: []\n", "nodes"), (None, "No such file")])
def test_a_bad_warm_pool_config_stops_the_controller_with_exit_3_naming_it(tmp_path, capsys, content, named):
    from autoscaler.controller.__main__ import main

    path = tmp_path / "fleet.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["--warm-pool-config", str(path), "--kubeconfig", str(tmp_path / "none")]) == 3
    err = capsys.readouterr().err
    assert "--warm-pool-config" in err and str(path) in err and named in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--prometheus-url", "prometheus:9090"), ("--metrics-url-template", "{pod}")])
def test_a_bad_url_is_a_bad_command_line_exit_2(capsys, flag, value):
    from autoscaler.controller.__main__ import main

    assert main([flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
