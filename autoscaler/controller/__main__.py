"""`python -m autoscaler.controller`: the controller alone (the container's entry point; it does
not load the simulator's or forecasting's command lines)."""
from __future__ import annotations

import argparse
import sys

from autoscaler.controller import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmscale")
    cli.register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(["controller", *(sys.argv[1:] if argv is None else argv)])
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
