"""PNG plots of a run: demand and replicas over time, one panel per policy."""
from __future__ import annotations

from pathlib import Path

__all__ = ["plot_timelines"]


def plot_timelines(results, path: str | Path, title: str | None = None) -> Path:
    """One panel per result (policy): demand (req/s, left axis) and Ready / loading replicas (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(results)
    if not results:
        raise ValueError("results: nothing to plot")
    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.9 * n + 0.8), sharex=True, squeeze=False)
    t0 = results[0].start_s
    span = max(r.end_s for r in results) - t0
    unit, div = ("h", 3600.0) if span > 3 * 3600 else ("min", 60.0)
    oracle = next((r for r in results if r.policy == "oracle"), None)
    for ax, r in zip(axes[:, 0], results):
        tl = r.timeline
        x = [(t - t0) / div for t in tl.get("t", [])]
        ax.fill_between(x, tl.get("demand_rps", []), step="pre", color="#c9d6e8", label="demand (req/s)")
        ax.set_ylabel("req/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax2 = ax.twinx()
        total = [a + b for a, b in zip(tl.get("ready", []), tl.get("loading", []))]
        ax2.step(x, total, where="post", color="#e6862e", lw=1.0, label="ready + loading")
        ax2.step(x, tl.get("ready", []), where="post", color="#b03030", lw=1.2, label="ready")
        if oracle is not None and r is not oracle:
            ox = [(t - t0) / div for t in oracle.timeline.get("t", [])]
            ax2.step(ox, oracle.timeline.get("ready", []), where="post", color="#555555", lw=0.8, ls="--",
                     label="oracle ready")
        ymax = max([*total, *(oracle.timeline.get("ready", []) if oracle else []), 1])
        ax2.set_ylim(0, ymax * 1.15 + 0.5)
        ax2.set_ylabel("replicas", fontsize=8)
        ax2.tick_params(labelsize=7)
        att = r.attainment * 100
        ax.set_title(f"{r.policy}: SLO {att:.2f} %, {r.gpu_hours:.1f} GPU-h, peak {r.peak_replicas}",
                     fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    first_twin = axes[0, 0].figure.axes[n] if len(fig.axes) > n else None
    if first_twin is not None:
        first_twin.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel(f"time since start of slice ({unit})", fontsize=8)
    r0 = results[0]
    fig.suptitle(title or f"{r0.trace} (x{r0.scale:.3g}), profile {r0.profile}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
