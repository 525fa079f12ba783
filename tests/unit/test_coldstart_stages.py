"""The cold-start ladder's stage parsing: events from time-stamped engine lines, stages that add up."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_coldstart", Path(__file__).resolve().parents[2] / "bench" / "coldstart.py")
coldstart = importlib.util.module_from_spec(_spec)
sys.modules["bench_coldstart"] = coldstart  # dataclasses look their module up there
_spec.loader.exec_module(coldstart)

API = "(APIServer pid=100) INFO 12-02 15:20:01 [api_utils.py:330] "
CORE = "(EngineCore pid=200) INFO 12-02 15:20:09 [core.py:133] "
WORKER = "(Worker pid=300) INFO 12-02 15:20:19 [cpu_model_runner.py:68] "


def _lines(loading: list[str]) -> list[tuple[float, str]]:
    """An engine start: banner at 10 s, load at 20 s, loading lines, then the next engine line at 30 s."""
    out = [(2.0, "some import warning"), (10.0, API + "vLLM server version 0.32.0, serving model /m"),
           (12.0, CORE + "Initializing a V1 LLM engine (v0.32.0) with config: ..."),
           (20.0, WORKER + "Starting to load model /m...")]
    out += [(21.0 + i, text) for i, text in enumerate(loading)]
    out += [(30.0, CORE + "Reducing Torch threads from 2 to 1 for serving."),
            (30.5, CORE + "CPU KV cache size: 2,048 tokens"),
            (45.0, CORE + "[core.py:403] init engine (profile, create kv cache, warmup model) took 15.00 s"),
            (50.0, API + "Starting vLLM server on http://127.0.0.1:8000")]
    return out


@pytest.mark.parametrize("loading", [
    [],  # Run:ai's streamer through vLLM: no line at all while loading
    [WORKER + "Filesystem type for checkpoints: EXT4. Checkpoint size: 0.27 GiB.",
     "Loading safetensors checkpoint shards: 100% Completed | 2/2 [00:00<00:00,  5.94it/s]",
     WORKER + "[default_loader.py:502] Loading weights took 7.90 seconds"],
    [WORKER + "[vllm_plugin.py:105] warmscale loaded 201 tensors (2.10 GB) from /pool in 3.10 s (0.68 GB/s, 0 retries)",
     "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01,  1.2 it/s]"],
    [WORKER + "[safetensors_streamer.py:236] [RunAI Streamer] Overall time to stream 2.0 GiB of all files to cpu: 6.5s"],
])
def test_loaded_is_the_first_engine_line_that_loading_did_not_print(loading):
    events = coldstart.find_events(_lines(loading))
    read_end = 20.0 + len(loading) if loading else 20.0
    assert events == {"banner": 10.0, "load": 20.0, "read_end": read_end, "loaded": 30.0, "init": 45.0}


def test_a_gpu_runner_in_the_engine_core_process_ends_loading_with_its_own_line():
    core_load = CORE.replace("core.py:133", "gpu_model_runner.py:4000")
    lines = [(10.0, API + "vLLM server version 0.32.0, serving model /m"),
             (20.0, core_load + "Starting to load model /m..."),
             (22.0, core_load + "Loading weights took 1.50 seconds"),
             (23.0, core_load + "Model loading took 15.2 GiB memory and 3.000000 seconds"),
             (40.0, CORE + "init engine (profile, create kv cache, warmup model) took 17.00 s")]
    assert coldstart.find_events(lines) == {"banner": 10.0, "load": 20.0, "read_end": 22.0, "loaded": 23.0, "init": 40.0}


def test_markers_are_found_in_order_only():
    # An "init engine" line before the model started loading (say, from an earlier attempt in the same
    # log) must not end the warm-up stage early.
    lines = [(1.0, CORE + "init engine (profile, create kv cache, warmup model) took 1.00 s"), *_lines([])]
    assert coldstart.find_events(lines)["init"] == 45.0


def test_missing_event_leaves_later_ones_out():
    lines = [(t, s) for t, s in _lines([]) if "Starting to load model" not in s]
    events = coldstart.find_events(lines)
    assert events == {"banner": 10.0}


def test_stages_are_consecutive_and_add_up_to_the_total():
    events = {"spawn": 4.0, "banner": 10.0, "load": 20.0, "loaded": 30.0, "init": 45.0, "health": 50.5, "token": 51.0}
    stages = coldstart.stage_times(events)
    assert stages == {"fetch": 4.0, "process": 6.0, "engine": 10.0, "weights": 10.0, "warmup": 15.0,
                      "ready": 5.5, "first_token": 0.5}
    assert coldstart.stages_add_up(stages, total=51.0)
    assert not coldstart.stages_add_up(stages, total=60.0)  # 51 vs 60: 15 % off
    split = coldstart.stage_times({**events, "read_end": 26.0})
    assert (split["weights_read"], split["weights_after_read"]) == (6.0, 4.0)
    assert {k: split[k] for k in stages} == stages  # the split is extra, not a stage of the sum


def test_a_missing_or_negative_stage_fails_the_check():
    events = {"spawn": 4.0, "banner": 10.0, "load": 20.0, "init": 45.0, "health": 50.5, "token": 51.0}
    stages = coldstart.stage_times(events)
    assert stages["weights"] is None and stages["warmup"] is None
    assert not coldstart.stages_add_up(stages, total=51.0)
    backwards = coldstart.stage_times({**events, "loaded": 50.0, "init": 45.0})
    assert backwards["warmup"] < 0
    assert not coldstart.stages_add_up(backwards, total=51.0)


def test_config_matches_the_checkpoint_layout():
    config = coldstart.llama_config(2048, 10, "BF16")
    assert config["num_attention_heads"] * config["head_dim"] == 2048
    assert config["num_key_value_heads"] * config["head_dim"] == 2048 // 4  # k_proj is (h/4, h)
    assert config["intermediate_size"] == 5632 and config["torch_dtype"] == "bfloat16"
