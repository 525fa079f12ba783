"""Cold-start tiers from the measured ladder (bench/coldstart.py -> bench/results/coldstart_ladder.json).

    python -m autoscaler.sim.tiers bench/results/coldstart_ladder.json

prints the `cold_start.tiers` block of the CPU profile (autoscaler/sim/profiles/tiny-llama-cpu.yaml)
and where each number comes from. Stages are the ladder's medians: `weights_s` is its weights stage
(the loader reading the checkpoint, then the tensors repacked), `engine_s` the rest of the way to
Ready (process start, engine start, warm-up and KV profiling, /health); the first token is not part
of a cold start (the request it serves pays it in its own TTFT).

The ladder's tiers map to the simulator's so: `image` (weights from object storage) = ladder tier d,
warmscale's loader from S3; `staged` (weights on the node) = tier e, warmscale from the node's warm
pool with the page cache cold; `cold` = `image`, because the CPU engines are local processes and no
image pull was measured; `asleep` has no entry: vLLM refuses sleep mode on CPU (ladder tier g).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["tiers_from_ladder"]

LADDER_TIER = {"image": "d", "staged": "e"}


def tiers_from_ladder(path: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({tier: stages}, {tier: source line}) from a ladder JSON."""
    data = json.loads(Path(path).read_text())
    tiers, sources = {}, {}
    for tier, key in LADDER_TIER.items():
        t = data["tiers"][key]
        if not t.get("ok"):
            raise ValueError(f"{path}: ladder tier {key} has no successful run")
        st = {k: float(v["median"]) for k, v in t["stages_s"].items() if isinstance(v, dict) and "median" in v}
        weights = st["fetch"] + st["weights"]
        engine = st["process"] + st["engine"] + st["warmup"] + st["ready"]
        tiers[tier] = {"weights_s": round(weights, 2), "engine_s": round(engine, 2)}
        sources[tier] = (f"ladder tier {key} ({t['title']}), medians of {t['ok']} runs: weights = fetch "
                         f"{st['fetch']:g} + weights {st['weights']:g} s; engine = process {st['process']:g} + engine "
                         f"{st['engine']:g} + warmup {st['warmup']:g} + ready {st['ready']:g} s; its median total to the "
                         f"first token was {t['total_s']['median']:g} s (first token {st['first_token']:g} s)")
    tiers["cold"] = dict(tiers["image"])
    sources["cold"] = "= image: the CPU engines are local processes, no image pull was measured"
    g = data["tiers"].get("g", {})
    sources["asleep"] = ("not offered: " + "; ".join(g.get("errors", []) or ["no sleep-mode run in the ladder"])
                         + " (ladder tier g)")
    return tiers, sources


def main(argv: list[str] | None = None) -> int:
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "bench/results/coldstart_ladder.json"
    tiers, sources = tiers_from_ladder(path)
    print(yaml.safe_dump({"tiers": tiers}, sort_keys=False), end="")
    for k, v in sources.items():
        print(f"# {k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
