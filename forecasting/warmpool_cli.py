"""`warmscale warm-pool plan`: which checkpoints each node's warm pool stages, from the demand forecast.

    warmscale warm-pool plan --config fleet.yaml --forecast forecasts.json [--current plan.json] \\
        [--json | --configmap warmscale-warm-plan --namespace warmscale-warm-pool]

``--config`` (YAML or JSON) is a `forecasting.warmpool.WarmPoolConfig`::

    horizon_s: 3600
    stickiness: 0.5                 # a staged copy counts 1.5x against newcomers
    nodes:
      - {name: gpu-a, disk_bytes: 200GB, gpus: 8}
      - {name: gpu-b, disk_bytes: 200GB, memory_bytes: 64GiB}   # a pool in /dev/shm: both bind
    models:
      - {name: llama-3-8b, location: s3://models/llama-3.1-8b, bytes: 16GB, saving_s: 3.5,
         requests_per_replica: 2.0, idle_grace_s: 300}

``--forecast`` is a JSON list of demand forecasts (`autoscaler.contract.DemandForecast` fields:
model, made_at, target_time, request_rate_p50, request_rate_p90), or an object
``{"now": t, "forecasts": [...], "replicas": {"model": running replicas}}``; ``now`` defaults to the
earliest ``made_at``. ``--current`` is the plan in force (the ``plan.json`` of the ConfigMap), so that
staged copies stay where they are unless a clearly better checkpoint needs the space.

    warmscale warm-pool local --config local.yaml --forecast forecasts.json [--stage] [--json]

plans this machine's warm pool for local mode (the ``warm_pool`` block of its configuration, one
node; what the cache holds now is the current placement) and, with ``--stage``, stages the plan
and evicts what it leaves out, as the DaemonSet does on a node (exit 3 when a checkpoint fails).

Output: a table; ``--json`` one JSON object (the plan, each copy's value, what was left out and why,
and ``document``, the plan document); ``--configmap NAME`` the ConfigMap that carries the document,
as YAML for ``kubectl apply -f -``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from autoscaler.contract import DemandForecast
from forecasting.warmpool import WarmPoolConfig, WarmPoolPlan, demand_from_forecasts, plan_warm_pool

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
EXIT_CODES = ("exit codes: 0 the plan was made (models left out are listed with the reason); 2 bad input: a file "
              "missing or unreadable, a value that fails validation (the message names the field and the value); "
              "3 (local --stage) a planned checkpoint failed to stage; 1 an unexpected error")
PLAN_KEY = "plan.json"
PLAN_CONFIGMAP = "warmscale-warm-plan"        # the ConfigMap the warm-pool DaemonSet mounts
WARM_POOL_NAMESPACE = "warmscale-warm-pool"   # where manifests/warm-pool/ installs it


class InputError(ValueError):
    """Bad input; the message names the file and the field."""


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("warm-pool", help="plan which checkpoints each node's warm pool stages")
    actions = group.add_subparsers(dest="warm_pool_command", required=True)
    p = actions.add_parser("plan", help="place checkpoints on nodes to save the most cold-start seconds",
                           description=__doc__.split("\n\n")[0], epilog=EXIT_CODES)
    p.add_argument("--config", type=Path, required=True, help="nodes, models and planner settings (YAML or JSON)")
    p.add_argument("--forecast", type=Path, required=True, help="demand forecasts (JSON)")
    p.add_argument("--current", type=Path, help="the plan in force (plan document JSON): what is staged where")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--configmap", metavar="NAME", help="print the ConfigMap NAME carrying the plan (YAML)")
    p.add_argument("--namespace", default=WARM_POOL_NAMESPACE, help="the ConfigMap's namespace")
    p.set_defaults(handler=run)

    local = actions.add_parser("local", help="plan (and stage) this machine's warm pool for `warmscale local`",
                               epilog=EXIT_CODES)
    local.add_argument("--config", type=Path, required=True, help="the `warmscale local` YAML (its warm_pool block)")
    local.add_argument("--forecast", type=Path, required=True, help="demand forecasts (JSON)")
    local.add_argument("--stage", action="store_true", help="stage the plan in the cache and evict the rest")
    local.add_argument("--json", action="store_true", help="print one JSON object")
    local.set_defaults(handler=run_local)


def _read(path: Path, what: str) -> object:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{what} {path}: not YAML or JSON ({exc})") from exc


def _explain(source: Path, exc: ValidationError) -> InputError:
    parts = [f"{'.'.join(map(str, e['loc'])) or '(document)'}={e.get('input')!r}: {e['msg']}" for e in exc.errors()]
    return InputError(f"{source}: " + "; ".join(parts))


def load_config(path: Path) -> WarmPoolConfig:
    try:
        return WarmPoolConfig.model_validate(_read(path, "config"))
    except ValidationError as exc:
        raise _explain(path, exc) from exc


def load_forecasts(path: Path) -> tuple[list[DemandForecast], float | None, dict[str, int]]:
    raw = _read(path, "forecast")
    now, replicas = None, {}
    if isinstance(raw, dict):
        now, replicas, raw = raw.get("now"), raw.get("replicas") or {}, raw.get("forecasts")
    if not isinstance(raw, list):
        raise InputError(f"forecast {path}: expected a list of forecasts or an object with 'forecasts'")
    forecasts = []
    for i, item in enumerate(raw):
        try:
            forecast = DemandForecast(**item)
        except TypeError as exc:
            raise InputError(f"forecast {path}: forecasts.{i}: {exc}") from exc
        for name in ("made_at", "target_time", "request_rate_p50", "request_rate_p90"):
            value = getattr(forecast, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InputError(f"forecast {path}: forecasts.{i}.{name}={value!r}: expected a number")
        forecasts.append(forecast)
    if now is not None and not isinstance(now, int | float):
        raise InputError(f"forecast {path}: now={now!r}: expected seconds")
    if not isinstance(replicas, dict) or not all(isinstance(v, int) and v >= 0 for v in replicas.values()):
        raise InputError(f"forecast {path}: replicas={replicas!r}: expected {{model: replicas >= 0}}")
    return forecasts, now, replicas


def load_current(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    from loader.warmplan import PlanError, parse_plan

    try:
        return dict(parse_plan(_read(path, "current plan"), str(path)).nodes)
    except PlanError as exc:
        raise InputError(str(exc)) from exc


def make_plan(config: WarmPoolConfig, forecasts: list[DemandForecast], now: float | None,
              replicas: dict[str, int], current: dict[str, list[str]]) -> WarmPoolPlan:
    if now is None:
        now = min((f.made_at for f in forecasts), default=0.0)
    demand = {m.name: demand_from_forecasts(m, forecasts, now, config.horizon_s, replicas.get(m.name, 0))
              for m in config.models}
    return plan_warm_pool(config, demand, current)


def configmap(name: str, namespace: str, document: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "warmscale-warm-pool",
                                    "app.kubernetes.io/part-of": "warmscale"}},
            "data": {PLAN_KEY: json.dumps(document, indent=1, sort_keys=True)}}


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings (the plan document) as readable `|` blocks."""


_LiteralDumper.add_representer(
    str, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        forecasts, now, replicas = load_forecasts(args.forecast)
        plan = make_plan(config, forecasts, now, replicas, load_current(args.current))
        document = plan.document(config, generated_at=now)
    except (InputError, ValueError) as exc:
        print(f"warmscale warm-pool plan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug: one line, not a traceback
        print(f"warmscale warm-pool plan: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    if args.json:
        print(json.dumps({**plan.to_json(), "document": document}))
    elif args.configmap:
        print(yaml.dump(configmap(args.configmap, args.namespace, document), Dumper=_LiteralDumper, sort_keys=False),
              end="")
    else:
        _print_table(plan)
    return EXIT_OK


def run_local(args: argparse.Namespace) -> int:
    from autoscaler.local.config import ConfigError, load_config
    from autoscaler.local.warmpool import NODE, planner_config, staged_now

    try:
        local = load_config(args.config)
        config = planner_config(local)
        forecasts, now, replicas = load_forecasts(args.forecast)
        plan = make_plan(config, forecasts, now, replicas, staged_now(local))
        document = plan.document(config, generated_at=now)
    except (ConfigError, InputError, ValueError) as exc:
        print(f"warmscale warm-pool local: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug: one line, not a traceback
        print(f"warmscale warm-pool local: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    out: dict[str, object] = {**plan.to_json(), "document": document}
    code = EXIT_OK
    if args.stage:
        from loader.cache import WarmCache
        from loader.config import LoaderConfig
        from loader.warmplan import follow_plan, parse_plan

        assert local.warm_pool is not None
        pool = local.warm_pool
        result = follow_plan(parse_plan(document), NODE, WarmCache(pool.cache_dir, pool.budget), LoaderConfig.from_env())
        out["staging"] = result.to_json()
        if result.failed:
            code = EXIT_FAILED
            print("warmscale warm-pool local: error: staging failed for "
                  + "; ".join(f"{m}: {e}" for m, e in result.failed.items()), file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    else:
        _print_table(plan)
        if args.stage:
            print(json.dumps(out["staging"]))
    return code


def _print_table(plan: WarmPoolPlan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"warm-pool plan: {plan.value_s:.0f} cold-start seconds saved (expected)")
    for column in ("node", "model", "copy", "GB", "value (s)", "kept"):
        table.add_column(column)
    for p in sorted(plan.placements, key=lambda p: (p.node, -p.value_s)):
        table.add_row(p.node, p.model, str(p.copy), f"{p.bytes / 1e9:.1f}", f"{p.value_s:.1f}", "yes" if p.kept else "new")
    console = Console()
    console.print(table)
    for model, reason in sorted(plan.unplaced.items()):
        console.print(f"not placed: {model}: {reason}")
    for node, models in sorted(plan.dropped.items()):
        console.print(f"dropped from {node}: {', '.join(models)}")
