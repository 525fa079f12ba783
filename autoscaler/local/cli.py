"""`warmscale local --config local.yaml`: engines as local processes behind the router, autoscaled.

Exit codes (also in --help):
  0  stopped on request (Ctrl-C / SIGTERM), engines stopped after their in-flight requests
  2  bad configuration: unknown key, bad value, missing model path, engine command not found,
     bad policy setting (nothing started)
  3  a configured port is in use (nothing started)
  4  an engine could not start (it exited at once or never became Ready); what started was stopped
  1  anything else, reported as one line (what started was stopped)
Errors go to stderr as `error: ...` lines, never wrapped.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

__all__ = ["register", "run", "EXIT_CODES"]

EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_PORT, EXIT_ENGINE = 0, 1, 2, 3, 4
EXIT_CODES = ("exit codes: 0 stopped on request; 2 bad configuration (unknown key, bad value, missing model path, "
              "engine command not found, bad policy setting), nothing started; 3 a configured port is in use, "
              "nothing started; 4 an engine could not start (exited at once or never Ready), what started was "
              "stopped; 1 anything else")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("local", help="run models on this machine: vLLM engines as processes behind the "
                              "router, autoscaled", epilog=EXIT_CODES,
                              description="Supervise vLLM engines as local processes behind an OpenAI-compatible "
                                          "router and scale them with warmscale's policy.")
    p.add_argument("--config", required=True, type=Path, help="YAML file (see autoscaler/local/config.py)")
    p.add_argument("--plain", action="store_true", help="plain log lines instead of the live view "
                   "(the default when stdout is not a terminal)")
    p.set_defaults(handler=run)
    from autoscaler.local import demo
    demo.register(subparsers)


def error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def open_runner(runner) -> int | None:
    """runner.open() with its failures turned into an exit code (None: opened)."""
    from pydantic import ValidationError

    from autoscaler.local.config import ConfigError
    from autoscaler.router.server import PortInUse

    try:
        runner.open()
    except PortInUse as exc:
        return error(f"port in use: {exc}", EXIT_PORT)
    except (ConfigError, ValidationError, ValueError, FileNotFoundError) as exc:
        return error(str(exc), EXIT_CONFIG)
    return None


def serve(runner, view) -> int:
    """Run until Ctrl-C / SIGTERM or a failure; always stops what started."""
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        stop_requested.set()
        runner._stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start()
        runner.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        view.close()
        runner.stop()
    if runner.failed and not stop_requested.is_set():
        code = EXIT_ENGINE if "engine" in runner.failed else EXIT_INTERNAL
        return error(runner.failed, code)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from autoscaler.local.config import ConfigError, load_config
    from autoscaler.local.runner import LocalRunner
    from autoscaler.local.view import make_view

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return error(str(exc), EXIT_CONFIG)
    view_holder = {}
    runner = LocalRunner(cfg, source=str(args.config), on_tick=lambda views: view_holder["view"].update(views))
    code = open_runner(runner)
    if code is not None:
        return code
    title = f"warmscale local: router {cfg.router.host}:{runner._router_server.port}" + (
        f", API {runner.api_url}" if runner.api_url else "") + f", state {cfg.state_dir}"
    view_holder["view"] = make_view(title, plain=True if args.plain else None)
    try:
        return serve(runner, view_holder["view"])
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return error(f"{type(exc).__name__}: {exc}", EXIT_INTERNAL)
