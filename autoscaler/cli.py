"""The `warmscale` command line."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from autoscaler.controller import cli as controller_cli
    from autoscaler.sim import cli as simulate_cli
    from forecasting import cli as forecast_cli

    parser = argparse.ArgumentParser(prog="warmscale", description="Autoscaler for LLM inference fleets.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    simulate_cli.register(subparsers)
    forecast_cli.register(subparsers)
    __import__("forecasting.warmpool_cli").warmpool_cli.register(subparsers)
    __import__("autoscaler.api.cli").api.cli.register(subparsers)
    controller_cli.register(subparsers)
    __import__("autoscaler.local.cli").local.cli.register(subparsers)
    __import__("autoscaler.router.cli").router.cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
