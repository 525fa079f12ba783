"""`warmscale controller`: run the cluster controller (in a pod, or against a kubeconfig)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from forecasting.warmpool_cli import PLAN_CONFIGMAP, WARM_POOL_NAMESPACE

__all__ = ["register", "run"]

EXIT_OK, EXIT_USAGE, EXIT_CONFIG, EXIT_API = 0, 2, 3, 4

_EPILOG = """exit codes:
  0  stopped cleanly (SIGTERM / SIGINT)
  2  bad command line: a value out of range, a Prometheus URL or metrics URL template that cannot work
  3  bad configuration: kubeconfig unreadable, not in a cluster, a port that cannot be served, a
     --warm-pool-config that cannot be read or fails validation (the message names the file and the field)
  4  the API server refused or could not be reached at start (the message says which)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("controller", help="run the cluster controller (scales ModelAutoscaler targets)",
                              description="Watch ModelAutoscalers and scale their targets; one replica leads through a Lease.",
                              epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: the in-cluster ServiceAccount)")
    p.add_argument("--namespace", help="watch only this namespace (default: all)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between ticks (default 5)")
    p.add_argument("--metrics-host", default="0.0.0.0", help="address of /metrics, /healthz, /readyz")
    p.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics, /healthz, /readyz (0: any)")
    p.add_argument("--api-host", default="0.0.0.0", help="address of the overrides REST API")
    p.add_argument("--api-port", type=int,
                   help="serve the overrides REST API on this port (0: any free port; default: not served; "
                        "the shipped Deployment uses 8081)")
    p.add_argument("--identity", help="this replica's name in the Lease (default: hostname-pid; POD_NAME in a pod)")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: --namespace, else warmscale-system)")
    p.add_argument("--lease-name", default="warmscale-controller")
    p.add_argument("--lease-seconds", type=float, default=10.0, help="lease duration (standby takes over after it)")
    p.add_argument("--prometheus-url", help="Prometheus for spec.metrics.source=prometheus")
    p.add_argument("--metrics-url-template",
                   help="direct scrapes go here instead of the pod IP: {name}, {namespace}, {ip} are filled in")
    p.add_argument("--workers", type=int, default=8, help="models ticked in parallel (default 8)")
    p.add_argument("--dry-run", action="store_true", help="advisory: decide and write status only, never scale")
    p.add_argument("--warm-pool-config", type=Path,
                   help="publish the warm-pool plan for this fleet (YAML: nodes and models, as `warmscale warm-pool "
                        "plan --config`) from the models' forecasts, every --warm-pool-every seconds")
    p.add_argument("--warm-pool-namespace", default=WARM_POOL_NAMESPACE,
                   help=f"namespace of the {PLAN_CONFIGMAP} ConfigMap (default {WARM_POOL_NAMESPACE})")
    p.add_argument("--warm-pool-every", type=float, default=600.0, help="seconds between plans (default 600)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(handler=run)


def _config(args):
    import os

    from autoscaler.controller.loop import ControllerConfig
    if args.interval <= 0:
        raise ValueError(f"--interval must be > 0, got {args.interval}")
    if args.lease_seconds < 3:
        raise ValueError(f"--lease-seconds must be >= 3, got {args.lease_seconds}")
    if args.prometheus_url and not args.prometheus_url.startswith(("http://", "https://")):
        raise ValueError(f"--prometheus-url must start with http:// or https://, got {args.prometheus_url!r}")
    if args.warm_pool_every <= 0:
        raise ValueError(f"--warm-pool-every must be > 0, got {args.warm_pool_every}")
    if args.metrics_url_template:
        try:
            args.metrics_url_template.format(name="n", namespace="ns", ip="10.0.0.1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"--metrics-url-template {args.metrics_url_template!r}: only {{name}}, {{namespace}}, {{ip}} "
                             f"may be used ({exc})") from exc
    extra = {}
    identity = args.identity or os.environ.get("POD_NAME")
    if identity:
        extra["identity"] = identity
    lease = args.lease_seconds
    return ControllerConfig(namespace=args.namespace, interval_s=args.interval, metrics_host=args.metrics_host,
                            metrics_port=args.metrics_port, lease_namespace=args.lease_namespace or os.environ.get("POD_NAMESPACE"),
                            lease_name=args.lease_name, lease_s=lease, renew_deadline_s=lease * 0.7, retry_s=min(2.0, lease / 5),
                            dry_run=args.dry_run, prometheus_url=args.prometheus_url,
                            metrics_url_template=args.metrics_url_template, workers=args.workers,
                            warm_pool_namespace=args.warm_pool_namespace, warm_pool_every_s=args.warm_pool_every, **extra)


def _api_client(kubeconfig: str | None, workers: int = 8):
    import kubernetes
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    # one connection per worker, plus the three watches that each hold one, the Lease and the API:
    # the default (5 per CPU) makes a busy controller discard connections and open new TLS sessions
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, workers + 8)
    return kubernetes.client.ApiClient(configuration)


class StartupError(Exception):
    """The API server cannot be used; `code` is the exit code (EXIT_CONFIG or EXIT_API)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def connect(kubeconfig: str | None, workers: int = 8):
    """A client of an API server that answered; StartupError naming what failed."""
    try:
        client = _api_client(kubeconfig, workers)
    except Exception as exc:  # noqa: BLE001 - kubeconfig/in-cluster errors come in many types
        where = kubeconfig or "in-cluster ServiceAccount (no --kubeconfig given)"
        raise StartupError(EXIT_CONFIG, f"cannot load Kubernetes credentials from {where}: {exc}") from None
    import kubernetes
    try:
        kubernetes.client.VersionApi(client).get_code()
    except Exception as exc:  # noqa: BLE001
        raise StartupError(EXIT_API, f"API server {client.configuration.host} unreachable: {exc}") from None
    return client


def run(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"warmscale controller: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.warm_pool_config is not None:
        from forecasting.warmpool_cli import load_config

        try:
            config.warm_pool = load_config(args.warm_pool_config)
        except ValueError as exc:
            print(f"warmscale controller: --warm-pool-config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        client = connect(args.kubeconfig, args.workers)
    except StartupError as exc:
        print(f"warmscale controller: {exc}", file=sys.stderr)
        return exc.code
    from autoscaler.controller.loop import Controller
    try:
        controller = Controller(config, client).start()
    except OSError as exc:
        print(f"warmscale controller: cannot serve metrics on {config.metrics_host}:{config.metrics_port}: {exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        api = _start_api(args, client, controller)
    except OSError as exc:
        controller.stop()
        print(f"warmscale controller: cannot serve the API on {args.api_host}:{args.api_port}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    where = f", API on port {api.port}" if api is not None else ""
    print(f"warmscale controller {config.identity}: metrics on port {controller.metrics_port}{where}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    if api is not None:
        api.stop()
    controller.stop()
    return EXIT_OK


def _start_api(args, client, controller):
    """The overrides REST API beside the controller: every replica serves it; only the leader's janitor deletes."""
    if args.api_port is None:
        return None
    from autoscaler.api.cluster import ClusterApi
    return ClusterApi(client, controller.autoscalers, controller.elector.is_leader,
                      host=args.api_host, port=args.api_port).start()
