"""The demo's closing report: the live run beside the simulator's run of the same requests.

The simulator replays the requests exactly as the live run sent them (same send times, silence
included, same prompt and output lengths) with the same policy settings, the tiny-llama-cpu
profile, direct 1 s scrapes and a fleet that starts at zero. Writes demo.json (the structured
summary that tests read), demo.png and report.md; returns the summary.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autoscaler.local.demo import HOLD, MODEL, POLICY, DemoRun

__all__ = ["write_report", "live_summary", "simulate_same_requests"]


def _pct(xs, q) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.percentile(xs, q)) if xs else None


def _engine_seconds(tl: dict) -> float:
    if len(tl["t"]) < 2:
        return 0.0
    fleet = np.array(tl["ready"]) + np.array(tl["starting"]) + np.array(tl["draining"])
    return float(np.sum(np.diff(tl["t"]) * fleet[:-1]))


def _returned_from_zero(tl: dict) -> bool:
    """Engines ran, then none at all, then engines again."""
    fleet = np.array(tl["ready"]) + np.array(tl["starting"]) + np.array(tl["draining"])
    seen_up = seen_zero_after = False
    for n in fleet:
        if n > 0 and seen_zero_after:
            return True
        seen_up = seen_up or n > 0
        seen_zero_after = seen_zero_after or (seen_up and n == 0)
    return False


def live_summary(run: DemoRun) -> dict:
    sent = run.load.sent
    served = [s for s in sent if s.served]
    ups = [c for c in run.changes if c["desired"] > c["current"]]
    return {"requests": len(sent), "served": len(served), "rejected_503": sum(s.status == 503 for s in sent),
            "failed": sum(not s.served and s.status != 503 for s in sent),
            "ttft_p50_s": _pct([s.ttft_s for s in served], 50), "ttft_p99_s": _pct([s.ttft_s for s in served], 99),
            "engine_seconds": _engine_seconds(run.timeline), "peak_engines": max(run.timeline["ready"], default=0),
            "scale_ups": len(ups), "scale_downs": len(run.changes) - len(ups),
            "starts_from_zero": sum(c["current"] == 0 for c in ups),
            "returned_from_zero": _returned_from_zero(run.timeline), "quiet_s": run.load.quiet_s,
            "restarts": run.restarts, "engine_start_s": run.engine_start_s, "wall_s": run.wall_s, "peak_rss_gib": run.peak_rss / 2**30}


def simulate_same_requests(run: DemoRun, profile, max_engines: int) -> dict:
    from autoscaler.policy.registry import make_policy
    from autoscaler.sim.sensing import SensingConfig
    from autoscaler.sim.simulator import SimConfig, simulate
    from autoscaler.sim.traces import Workload

    r = run.replay
    order = np.concatenate((np.flatnonzero(~r.second), np.flatnonzero(r.second)))[:len(run.load.sent)]
    arrival = np.array([s.sent_s for s in run.load.sent], dtype=np.float64)
    # the same window as the live run's (which ends when the last answer has streamed)
    end = max(float(arrival.max()) + 1.0 if arrival.size else 1.0, max(run.timeline["t"], default=0.0))
    w = Workload(r.trace, MODEL, arrival, r.prompt[order], r.output[order], 0.0, end, r.rate_factor * r.compress,
                 "requests", r.trace, [r.describe()])
    policy = make_policy("warmscale", profile.to_capacity(), **POLICY, min_replicas=0, max_replicas=max_engines)
    cfg = SimConfig(sensing=SensingConfig(mode="direct", rate_window_s=POLICY["rate_window_s"]), initial_replicas=0,
                    timeline_interval_s=2.0, gateway_timeout_s=HOLD["max_wait_s"])
    return simulate(w, policy, profile, cfg).to_dict(timeline=True)


def write_report(out: Path, run: DemoRun, profile, max_engines: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    live = live_summary(run)
    sim = simulate_same_requests(run, profile, max_engines)
    simulated = {k: sim[k] for k in ("requests", "completed", "dropped", "ttft_p50_s", "ttft_p99_s", "peak_replicas",
                                     "scale_up_events", "scale_down_events", "cold_start_waits", "decisions")}
    simulated["engine_seconds"] = sim["gpu_hours"] * 3600 / profile.gpus_per_replica
    summary = {"replay": run.replay.to_dict(), "live": live, "simulated": simulated, "policy": POLICY,
               "hold": HOLD, "max_engines": max_engines, "profile": profile.name,
               "profile_cold_start_s": profile.cold_start.total_s,
               "decisions": run.changes, "timeline": run.timeline, "sim_timeline": sim["timeline"],
               "files": {"report": str(out / "report.md"), "plot": str(out / "demo.png")}}
    (out / "demo.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    _plot(out / "demo.png", run, sim["timeline"])
    (out / "report.md").write_text(_markdown(summary))
    return summary


def _plot(path: Path, run: DemoRun, sim_tl: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = run.timeline
    sent = np.array([s.sent_s for s in run.load.sent])
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    end = max(float(sent.max()) if sent.size else 0.0, tl["t"][-1] if tl["t"] else 0.0) + 2
    bins = np.arange(0, end + 2, 2.0)
    axes[0].hist(sent, bins=bins, weights=np.full(sent.size, 0.5), color="tab:gray")
    axes[0].set_ylabel("arrivals / s")
    axes[0].set_title(f"warmscale demo: {run.replay.trace}, {run.replay.compress:g}x time compression")
    axes[1].step(tl["t"], tl["ready"], where="post", label="live: ready engines")
    axes[1].step(tl["t"], np.array(tl["ready"]) + np.array(tl["starting"]), where="post", linestyle="--",
                 label="live: ready + starting")
    axes[1].step(sim_tl["t"], np.array(sim_tl["ready"]) + np.array(sim_tl["loading"]), where="post", alpha=0.7,
                 label="simulator: ready + starting")
    axes[1].set_ylabel("engines")
    axes[1].legend(loc="upper right")
    # with no engine Ready the router's held requests are the queue (the runner counts them as waiting)
    axes[2].plot(tl["t"], [max(h, w or 0) for h, w in zip(tl["held"], tl["waiting"])],
                 label="live: queued (held by the router, or waiting in engines)")
    axes[2].plot(sim_tl["t"], sim_tl["waiting"], label="simulator: queued", alpha=0.7)
    axes[2].set_ylabel("requests")
    axes[2].set_xlabel("seconds since the replay started")
    axes[2].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _starts(xs: list[float]) -> str:
    return ", ".join(f"{x:.0f} s" for x in xs) or "-"


def _s(x) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _markdown(summary: dict) -> str:
    live, sim = summary["live"], summary["simulated"]
    dropped = sum(sim["dropped"].values()) if isinstance(sim["dropped"], dict) else sim["dropped"]
    lines = ["# warmscale demo", "", f"Replay: {summary['replay']['description']}.", "",
             f"Silence between the halves: {live['quiet_s']:.0f} s." if live["quiet_s"] is not None else "",
             "", f"| | live (CPU vLLM engines) | simulator ({summary['profile']} profile, same requests) |",
             "|---|---|---|",
             f"| requests | {live['requests']} | {sim['requests']} |",
             f"| served | {live['served']} | {sim['completed']} |",
             f"| rejected or dropped | {live['rejected_503'] + live['failed']} | {dropped} |",
             f"| TTFT p50 | {_s(live['ttft_p50_s'])} | {_s(sim['ttft_p50_s'])} |",
             f"| TTFT p99 | {_s(live['ttft_p99_s'])} | {_s(sim['ttft_p99_s'])} |",
             f"| engine-seconds | {live['engine_seconds']:.0f} | {sim['engine_seconds']:.0f} |",
             f"| peak engines | {live['peak_engines']} | {sim['peak_replicas']} |",
             f"| scale-ups / scale-downs | {live['scale_ups']} / {live['scale_downs']} | "
             f"{sim['scale_up_events']} / {sim['scale_down_events']} |",
             f"| engine start (process to Ready) | {_starts(live['engine_start_s'])} | "
             f"{summary['profile_cold_start_s']:.0f} s |",
             f"| engine restarts | {live['restarts']} | - |", "",
             f"Live wall time {live['wall_s']:.0f} s; peak memory of the process tree (router, control loop, "
             f"engines, load generator) {live['peak_rss_gib']:.2f} GiB.", "",
             "TTFT is measured by the load generator from sending to the first streamed token, holds for a cold "
             "start included. The simulator models an idle machine with the profile's engine: on a shared CPU the "
             "live engines start and run slower, so their holds, queues and TTFT run longer.", "",
             "Scaling decisions that changed the count (seconds since the replay started):", ""]
    lines += [f"- {d['t']:.0f} s: {d['current']} -> {d['desired']}, {d['reason']} ({d['detail']})"
              for d in summary["decisions"]]
    lines += ["", "![demo](demo.png)", ""]
    return "\n".join(lines)
