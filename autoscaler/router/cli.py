"""`warmscale router`: the router in front of a namespace's engines, in a cluster."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

__all__ = ["register", "run"]

EXIT_OK, EXIT_USAGE, EXIT_CONFIG, EXIT_API = 0, 2, 3, 4

_EPILOG = """exit codes:
  0  stopped cleanly (SIGTERM / SIGINT)
  2  bad command line: no namespace, an engine URL template that cannot work, a bound out of range
  3  bad configuration: kubeconfig unreadable, not in a cluster, a port that cannot be served
  4  the API server refused or could not be reached at start, or the ModelAutoscalers and pods
     could not be listed (the message says which)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "router", help="run the OpenAI-compatible router in a cluster (holds requests at zero, pokes the controller)",
        description="Route each ModelAutoscaler's model to the Ready pods of its selector, least loaded first; hold "
                    "requests while a model has none and tell the controller at once through the ModelAutoscaler's "
                    "status.activation.", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: the in-cluster ServiceAccount)")
    p.add_argument("--namespace", help="the ModelAutoscalers' and engines' namespace (default: POD_NAMESPACE)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080, help="port of the OpenAI API and /metrics (0: any)")
    p.add_argument("--engine-url-template",
                   help="engine base URL instead of http://<pod IP>:<spec.metrics.port>: {name}, {namespace}, {ip}, "
                        "{port} are filled in")
    p.add_argument("--max-wait", type=float, default=180.0, help="longest a request is held at zero, seconds")
    p.add_argument("--max-held", type=int, default=1000, help="requests held per model at once (0: never hold)")
    p.add_argument("--identity", help="this router's name in status.activation (default: POD_NAME, else hostname-pid)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(handler=run)


def _checked(args):
    from autoscaler.router.hold import HoldSettings
    from autoscaler.router.kube import check_engine_url_template

    namespace = args.namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        raise ValueError("--namespace is required outside a pod (POD_NAMESPACE is not set)")
    if args.engine_url_template is not None:
        check_engine_url_template(args.engine_url_template)
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    if args.max_wait < 0 or args.max_held < 0:
        raise ValueError(f"--max-wait and --max-held must be >= 0, got {args.max_wait:g} and {args.max_held}")
    return namespace, HoldSettings(max_wait_s=args.max_wait, max_held=args.max_held)


def run(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        namespace, hold = _checked(args)
    except ValueError as exc:
        print(f"warmscale router: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from autoscaler.controller.cli import StartupError, connect
    try:
        client = connect(args.kubeconfig)
    except StartupError as exc:
        print(f"warmscale router: {exc}", file=sys.stderr)
        return exc.code
    from autoscaler.router.cluster import ClusterRouter
    from autoscaler.router.server import PortInUse
    try:
        router = ClusterRouter(client, namespace, args.host, args.port, args.engine_url_template, hold,
                               identity=args.identity or os.environ.get("POD_NAME"))
    except PortInUse as exc:
        print(f"warmscale router: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        router.start()
    except TimeoutError as exc:
        print(f"warmscale router: {exc} (does its ServiceAccount have the warmscale-router Role?)", file=sys.stderr)
        return EXIT_API
    except RuntimeError as exc:   # the HTTP server did not come up
        print(f"warmscale router: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"warmscale router {router.identity}: serving {namespace}'s models on {router.url}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    router.stop()
    return EXIT_OK
