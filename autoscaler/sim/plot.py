"""PNG plots of a run: demand and replicas over time, one panel per policy."""
from __future__ import annotations

from pathlib import Path

__all__ = ["plot_timelines", "plot_frontier"]


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


def plot_frontier(tuning: dict, scored: dict, path: str | Path, target: float = 0.99, title: str | None = None) -> Path:
    """SLO attainment against GPU-hours (as a multiple of the bound) per policy: each setting on the
    tuning data (small points, the policy's non-dominated ones joined), and the runs on the scoring
    data (stars: medians with their seed ranges). `tuning` and `scored`: label -> summary with
    'policy', 'attainment', 'gpu_hours', 'bound_gpu_hours' (each {'median', 'min', 'max'})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.* below)

    colors = {"warmscale": "#1f77b4", "hpa-cpu": "#8c564b", "keda": "#d62728", "knative": "#2ca02c",
              "aibrix": "#9467bd", "static": "#7f7f7f", "oracle": "#000000"}
    fig, ax = plt.subplots(figsize=(8, 5))

    def xy(s):
        b = s["bound_gpu_hours"]["median"] or 1.0
        return s["gpu_hours"]["median"] / b, _clip01(s["attainment"]["median"])

    for pol, color in colors.items():
        pts = sorted(xy(s) for s in tuning.values() if s["policy"] == pol)
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=color, alpha=0.6)
            front, best = [], -1.0
            for x, y in pts:   # cheapest first: keep each point that attains more than every cheaper one
                if y > best:
                    front.append((x, y))
                    best = y
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1, alpha=0.6,
                    label=f"{pol} settings (tuning data)")
        for lab, s in scored.items():
            if s["policy"] != pol:
                continue
            x, y = xy(s)
            b = s["bound_gpu_hours"]["median"] or 1.0
            yerr = [[y - _clip01(s["attainment"]["min"])], [_clip01(s["attainment"]["max"]) - y]]
            xerr = [[x - s["gpu_hours"]["min"] / b], [s["gpu_hours"]["max"] / b - x]]
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="*", ms=11, color=color, mec="black", mew=0.5,
                        elinewidth=0.8)
            ax.annotate(lab, (x, y), fontsize=6, xytext=(4, -8), textcoords="offset points")
    ax.axhline(target, color="#444444", ls="--", lw=0.8)
    ax.axvline(1.0, color="#000000", ls=":", lw=0.8)
    ax.set_yscale("logit")   # 50 %, 90 %, 99 %, 99.9 % evenly spaced: the shortfall near the target shows
    ticks = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t * 100:g} %" for t in ticks]))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("GPU-hours / exact optimum (the bound)")
    ax.set_ylabel("SLO attainment (logit scale)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clip01(a: float) -> float:
    return min(max(float(a), 1e-4), 1 - 1e-5)
