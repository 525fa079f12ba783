"""`warmscale forecast ...` subcommands.

    warmscale forecast backtest --trace servegen --horizon 6 [--model m-large]

prints, per model and horizon, the ensemble's P90 pinball loss against the baseline (the stronger of
last value and same-window-a-day-earlier, both with conformal P90), P90 coverage, and the share of
rising-edge windows under-forecast at P90.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from forecasting.ensemble import DEFAULT_MEMBERS, MEMBER_NAMES
from forecasting.evaluation import run_backtests, summary
from forecasting.traces import load_trace


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `forecast` command (with its `backtest` subcommand) to a CLI."""
    forecast = subparsers.add_parser("forecast", help="demand forecasting tools")
    actions = forecast.add_subparsers(dest="forecast_command", required=True)
    backtest = actions.add_parser("backtest", help="rolling-origin backtest of the forecaster on a trace")
    backtest.add_argument("--trace", required=True, help='"servegen", "servegen-<model>", "azure-code", "azure-conv" or a CSV path')
    backtest.add_argument("--horizon", type=_positive_int, required=True, help="windows ahead (1..N are all scored)")
    backtest.add_argument("--model", help="only this model of the trace")
    backtest.add_argument("--refit-every", type=_positive_int, default=6, help="origins between ensemble refits (default 6)")
    backtest.add_argument(
        "--members", default=",".join(DEFAULT_MEMBERS), help=f"comma-separated ensemble members from {','.join(MEMBER_NAMES)}"
    )
    backtest.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backtest.set_defaults(handler=run_backtest_command)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run_backtest_command(args: argparse.Namespace) -> int:
    """Run `forecast backtest` and print the scores; returns the exit status."""
    members = tuple(m.strip() for m in args.members.split(",") if m.strip())
    unknown = [m for m in members if m not in MEMBER_NAMES]
    if unknown:
        print(f"error: --members: unknown member {unknown[0]!r}; choose from {', '.join(MEMBER_NAMES)}", file=sys.stderr)
        return 2
    try:
        series = load_trace(args.trace, model=args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: --trace {args.trace!r}: {error}", file=sys.stderr)
        return 2
    results = [r for r, _, _ in run_backtests(series, args.horizon, args.refit_every, members)]
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results], "summary": summary(results)}, indent=2))
        return 0
    # Piped output has no terminal width; keep the table readable rather than folded to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    table = Table(title=f"forecast backtest: {args.trace}, horizons 1..{args.horizon}")
    for column in ("model", "h", "targets", "P90 pinball", "baseline", "ratio", "P90 cover", "rise under", "base rise under", "baseline method"):
        table.add_column(column, justify="right")
    for r in results:
        for e, b, method, ratio in zip(r.ensemble, r.baseline, r.baseline_method, r.pinball_ratio()):
            table.add_row(
                r.model, str(e.horizon), str(e.targets), f"{e.p90_pinball:.3g}", f"{b.p90_pinball:.3g}", f"{ratio:.3f}",
                f"{e.p90_coverage:.1%}", _share(e.rising_under_p90), _share(b.rising_under_p90), method,
            )
    console.print(table)
    for key, value in summary(results).items():
        console.print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def _share(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"  # NaN: no rising-edge target in the span


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m forecasting.cli forecast backtest ...`)."""
    parser = argparse.ArgumentParser(prog="warmscale")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
