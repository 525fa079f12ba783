#!/usr/bin/env python
"""Fit autoscaler/sim/profiles/tiny-llama-cpu.yaml to the real vLLM CPU engine of the test ground.

    .venv/bin/python hack/calibrate_cpu_profile.py              # starts its own engine (tiny model)
    .venv/bin/python hack/calibrate_cpu_profile.py --url http://127.0.0.1:8000 --model tiny

The engine must be started with the test ground's arguments (tests/ground/vllm.py DEFAULT_ARGS),
which the integration test tests/integration/test_cpu_profile.py uses too. See
autoscaler/sim/calibrate.py for what is measured and how it is fitted.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.sim.calibrate import Endpoint, fit_profile  # noqa: E402
from tests.ground.vllm import DEFAULT_ARGS  # noqa: E402

OUT = ROOT / "autoscaler" / "sim" / "profiles" / "tiny-llama-cpu.yaml"


def _arg(name: str, default: int) -> int:
    args = list(DEFAULT_ARGS)
    return int(args[args.index(name) + 1]) if name in args else default


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="base URL of a running engine (default: start one with the tiny model)")
    ap.add_argument("--model", default="tiny", help="served model name")
    ap.add_argument("--max-num-seqs", type=int, default=_arg("--max-num-seqs", 4))
    ap.add_argument("--max-model-len", type=int, default=_arg("--max-model-len", 2048))
    ap.add_argument("--max-num-batched-tokens", type=int, default=None,
                    help="the engine's step token budget (default: max-model-len, vLLM's CPU default here)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    budget = args.max_num_batched_tokens or args.max_model_len
    kw = dict(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=budget, max_model_len=args.max_model_len,
              repeats=args.repeats, engine_args=DEFAULT_ARGS)
    if args.url:
        profile = fit_profile(Endpoint(args.url.rstrip("/"), args.model), **kw)
    else:
        from tests.ground.tiny_model import cached_tiny_llama
        from tests.ground.vllm import start_vllm

        model = cached_tiny_llama()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            with start_vllm(model, Path(tmp)) as engine:
                started = time.monotonic() - t0
                print(f"engine up in {started:.1f} s at {engine.base_url}")
                profile = fit_profile(engine, cold_start_s=started, **kw)
    args.out.write_text("# Fitted by hack/calibrate_cpu_profile.py against the real vLLM CPU engine; do not edit by hand.\n"
                        + yaml.safe_dump(profile, sort_keys=False, width=110))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
