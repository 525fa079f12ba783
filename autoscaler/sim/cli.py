"""`warmscale simulate`: replay a trace under one or all policies and print a comparison table.

    warmscale simulate --trace azure-conv --policy all
    warmscale simulate --trace servegen-m-large --slice 7d:7d12h --policy warmscale,keda --json out.json --plot out.png
    warmscale simulate --trace azure-code --policy warmscale,static --static-replicas 12 \
        --set warmscale.target_utilization=0.7

Errors go to stderr as one unwrapped `error: ...` line (people grep them); exit codes: 0 done,
2 bad input (trace, slice, profile, policy name or setting, budget).

`register(subparsers)` adds the subcommand to the `warmscale` CLI (autoscaler/cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run", "main", "render_table"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from autoscaler.sim.profile import DEFAULT_PROFILE
    from autoscaler.sim.traces import TRACE_NAMES

    p = subparsers.add_parser(
        "simulate", help="replay a trace under autoscaling policies and compare them",
        epilog="exit codes: 0 done; 2 bad input (trace, slice, profile, policy name or setting, budget), "
               "reported on stderr as one 'error: ...' line",
        description="Replay a request or rate trace on a simulated vLLM fleet under one or more policies. "
                    f"Trace names: {', '.join(TRACE_NAMES)} (under $WARMSCALE_TRACES_DIR, default "
                    "../shared/data/traces from the repo root), or a CSV path (FILE::MODEL picks a model "
                    "of a rate file).")
    p.add_argument("--trace", required=True, help="trace name or CSV path")
    p.add_argument("--policy", default="all",
                   help="policy name, comma-separated names, or 'all' (every registry policy plus the oracle)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="engine profile name or YAML path")
    p.add_argument("--slice", default=None, metavar="START:END",
                   help="simulate part of the trace, times on its clock, e.g. 7d:10d (ServeGen days 8-10)")
    p.add_argument("--scale", type=float, default=None,
                   help="rate factor; default: the one that makes the peak minute need --peak-replicas")
    p.add_argument("--peak-replicas", type=float, default=10.0,
                   help="replicas the busiest minute needs after scaling (default 10)")
    p.add_argument("--burstiness", type=float, default=1.5,
                   help="coefficient of variation of inter-arrival times for rate traces (1 = Poisson)")
    p.add_argument("--gpu-budget", type=_positive_int, default=None,
                   help="GPUs available to the fleet (default: 2 x the oracle's peak when the oracle or static "
                        "runs, as in bench/policies.py; otherwise unlimited)")
    p.add_argument("--sensing", choices=("prometheus", "direct"), default="prometheus",
                   help="how the controller reads metrics: prometheus (15 s scrapes, answers 15 s late; the "
                        "controller in a cluster) or direct (1 s scrapes of each pod; local mode)")
    p.add_argument("--no-router", action="store_true",
                   help="no router metrics (arrivals, held requests): vLLM's own metrics only")
    p.add_argument("--scrape-interval", type=float, default=None, help="scrape interval, s (default: the mode's)")
    p.add_argument("--scrape-lag", type=float, default=None, help="delivery lag of metrics, s (default: the mode's)")
    p.add_argument("--miss-rate", type=float, default=0.01, help="share of pod scrapes that fail (default 0.01)")
    p.add_argument("--static-replicas", type=_positive_int, default=None, metavar="N",
                   help="replicas of the static policy (default: the oracle's peak)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="POLICY.FIELD=VALUE",
                   help="a policy setting, e.g. warmscale.target_utilization=0.7 or knative.target_concurrency=50; "
                        "repeat for more")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results (with timelines) here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of demand and replicas per policy here")
    p.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _policies(text: str) -> list[str]:
    from autoscaler.sim.runner import ALL_POLICIES

    names = ALL_POLICIES() if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
    known = ALL_POLICIES()
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(f"--policy {text!r}: unknown {', '.join(map(repr, bad)) or 'empty list'}; expected 'all' "
                         f"or some of {', '.join(known)}")
    return names


def parse_settings(items: list[str], policies: list[str]) -> dict[str, dict]:
    """['warmscale.target_utilization=0.7', ...] -> {'warmscale': {'target_utilization': 0.7}}.

    Values are read as JSON when they parse (0.7, 3, true, null), else kept as text; the policy's
    own config model validates them later (an unknown field is an error naming it)."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        name, dot, fld = key.strip().rpartition(".")
        if not eq or not dot or not name or not fld:
            raise ValueError(f"--set {item!r}: expected POLICY.FIELD=VALUE, e.g. warmscale.target_utilization=0.7")
        if name not in policies:
            raise ValueError(f"--set {item!r}: policy {name!r} is not among those run ({', '.join(policies)})")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(name, {})[fld] = value
    return out


def _error(message: str) -> int:
    """One `error:` line on stderr, never wrapped (rich would fold it at the terminal width)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def render_table(results, title: str = ""):
    """A rich Table comparing results; shortfalls below 99 % and GPU-hours vs the exact optimum (the bound) shown."""
    from rich.table import Table

    from autoscaler.sim.results import SLOS
    from autoscaler.sim.runner import TARGET_ATTAINMENT

    oracle = next((r for r in results if r.policy == "oracle"), None)
    bound = oracle and (oracle.bound_gpu_hours or oracle.gpu_hours)
    t = Table(title=title or None, show_lines=False)
    for col, just in (("policy", "left"), (f"SLO {SLOS[0].key}", "right"), ("after 5 min", "right"),
                      (f"SLO {SLOS[1].key}", "right"),
                      ("TTFT p50", "right"), ("TTFT p99", "right"), ("GPU-h", "right"), ("x bound", "right"),
                      ("cold waits", "right"), ("scale ev.", "right"), ("idle GPU", "right"), ("peak", "right"),
                      ("dropped", "right")):
        t.add_column(col, justify=just)
    for r in results:
        a = r.slo_attainment[SLOS[0].key]
        att = f"{a * 100:.2f} %"
        if a < TARGET_ATTAINMENT:
            att = f"[red]{att} ({(a - TARGET_ATTAINMENT) * 100:+.2f})[/red]"
        ratio = f"{r.gpu_hours / bound:.2f}" if bound else "-"
        warm = "-" if r.attainment_after_warmup is None else f"{r.attainment_after_warmup * 100:.2f} %"
        t.add_row(r.policy, att, warm, f"{r.slo_attainment[SLOS[1].key] * 100:.2f} %",
                  _s(r.ttft_p50_s), _s(r.ttft_p99_s), f"{r.gpu_hours:.2f}", ratio, str(r.cold_start_waits),
                  str(r.scale_events), f"{r.idle_gpu_share * 100:.0f} %", str(r.peak_replicas),
                  str(sum(r.dropped.values())))
    return t


def _s(x: float | None) -> str:
    return "-" if x is None else (f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from autoscaler.sim.profile import load_profile
    from autoscaler.sim.runner import parse_slice, run_policies
    from autoscaler.sim.simulator import SimConfig
    from pydantic import ValidationError

    from autoscaler.sim.runner import verdict
    from autoscaler.sim.sensing import SensingConfig
    from autoscaler.sim.traces import TraceError, human_span

    console = Console(stderr=True)
    try:
        profile = load_profile(args.profile)
        start_s, end_s = parse_slice(args.slice)
        names = _policies(args.policy)
        settings = parse_settings(args.settings, names)
        if args.static_replicas is not None and "static" not in names:
            raise ValueError("--static-replicas: the static policy is not among those run (add it to --policy)")
        if "oracle" in settings:
            raise ValueError("--set oracle.*: the oracle has no settings")
        _check_settings(settings, profile)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        return _error(_setting_error(exc))
    try:
        sensing = SensingConfig(mode=args.sensing, router=not args.no_router, scrape_interval_s=args.scrape_interval,
                                lag_s=args.scrape_lag, miss_rate=args.miss_rate)
    except ValueError as exc:
        return _error(str(exc))
    config = SimConfig(gpu_budget=args.gpu_budget, sensing=sensing)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("loading trace", total=1.0)

        def on_start(name, w):
            bar.update(task, description=f"{name} on {w.name} ({len(w):,} requests)", completed=0)

        def progress(frac):
            bar.update(task, completed=frac)

        try:
            w, results = run_policies(args.trace, names, profile, start_s=start_s, end_s=end_s, scale=args.scale,
                                      peak_replicas=args.peak_replicas, cv=args.burstiness, seed=args.seed,
                                      config=config, on_start=on_start, progress=progress,
                                      budget_x_oracle_peak=2.0 if args.gpu_budget is None else None,
                                      settings=settings, static_replicas=args.static_replicas)
        except (TraceError, FileNotFoundError, ValueError, ValidationError) as exc:
            bar.stop()
            return _error(_setting_error(exc))
    out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=not sys.stdout.isatty())
    model = f", model {w.model}" if w.model != w.name else ""
    title = (f"{w.name}{model}: {len(w):,} requests over {human_span(w.duration_s)} "
             f"({human_span(w.start_s)} - {human_span(w.end_s)} on the trace's clock), rate x{w.scale:.4g}, "
             f"profile {profile.name}")
    out.print(render_table(results, title))
    for note in w.notes:
        out.print(f"  [dim]{note}[/dim]")
    for r in results:
        for note in r.notes:
            if note not in w.notes:
                out.print(f"  [dim]{r.policy}: {note}[/dim]")
    out.print(f"  {verdict(results)['text']}")
    speed = sorted(r.requests_per_wall_s for r in results if r.policy != "oracle")
    if speed:
        out.print(f"  [dim]simulator speed: {speed[len(speed) // 2]:,.0f} requests per wall-second (median)[/dim]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"trace": w.name, "scale": w.scale, "profile": profile.name,
                                         "notes": w.notes, "results": [r.to_dict(timeline=True) for r in results]},
                                        indent=1))
    if args.plot:
        from autoscaler.sim.plot import plot_timelines

        plot_timelines(results, args.plot)
    return 0


def _check_settings(settings: dict[str, dict], profile) -> None:
    """Build each configured policy once, so that a bad --set fails before any simulation runs."""
    from autoscaler.policy.registry import make_policy

    for name, fields in settings.items():
        extra = {"replicas": 1} if name == "static" and "replicas" not in fields else {}
        make_policy(name, profile.to_capacity(), **fields, **extra)


def _setting_error(exc: Exception) -> str:
    """A pydantic error (a --set field) as one line: 'field: problem (got value)'."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or exc.title
        parts.append(f"{exc.title}.{loc}: {e.get('msg')} (got {e.get('input')!r})")
    return "--set: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmscale")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
