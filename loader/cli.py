"""``warmscale-loader``: stage checkpoints on a node, load them to a device, make test checkpoints.

    warmscale-loader warm s3://bucket/model --cache-dir /mnt/nvme/warmscale --budget 200GB
    warmscale-loader warm-plan --plan plan.json --node "$NODE_NAME" --cache-dir /mnt/nvme/warmscale --label-node
    warmscale-loader pull s3://bucket/model --device cuda:0 [--cache-dir ...]
    warmscale-loader inspect s3://bucket/model
    warmscale-loader make-checkpoint /tmp/ckpt --size 3GB --shards 2

``--json`` prints one JSON object on stdout (for scripts) instead of progress bars and tables;
a failure prints ``{"error": ..., "exit_code": ...}`` instead, and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from loader.config import LoaderConfig

if TYPE_CHECKING:
    import torch

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_USAGE}    bad input: an unknown option or setting, a malformed size, a device this machine lacks
  {EXIT_FAILED}    the load or staging failed: not found, not a checkpoint, access denied, corrupt data,
       the store kept failing; warm-plan: a planned checkpoint failed to stage (the others were staged
       and labelled) or the node's labels could not be updated
  {EXIT_INTERRUPTED}  interrupted
  {EXIT_INTERNAL}    an unexpected error (a bug: run with -v for the traceback)"""
_PAGE = 4096


class UsageFailure(Exception):
    """A command line argparse rejects; reported like every other failure (JSON under ``--json``)."""


class PartlyFailed(Exception):
    """Some of a command's work failed; ``result`` says what was done (printed under ``--json`` with the error)."""

    def __init__(self, message: str, result: dict[str, object]) -> None:
        super().__init__(message)
        self.result = result


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageFailure(f"{self.prog}: {message}")

_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12,
          "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """``"3GB"`` -> 3_000_000_000, ``"512MiB"`` -> 536_870_912."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 512MiB, 3GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _add_loader_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL[_S3] or AWS)")
    p.add_argument("--region", help="S3 region")
    p.add_argument("--concurrency", type=int, help="parallel ranged GETs (default: one per 5 MiB of the memory budget, 16-64)")
    p.add_argument("--range-size", type=parse_size, help="bytes per ranged GET")
    p.add_argument("--memory-limit", type=parse_size, help="host staging ring size")
    p.add_argument("--verify-sha256", action="store_true", default=None, help="check SHA-256 sidecars / index digests")
    p.add_argument("--no-hedge", action="store_true", help="never re-issue slow ranges")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of progress and tables")


def _config(args: argparse.Namespace, **extra: object) -> LoaderConfig:
    return LoaderConfig.from_env(
        endpoint_url=args.endpoint_url, region=args.region, concurrency=args.concurrency,
        range_bytes=args.range_size, memory_limit_bytes=args.memory_limit, verify_sha256=args.verify_sha256,
        hedge=False if args.no_hedge else None, **extra,
    )


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
    )


def _cmd_warm(args: argparse.Namespace, console: Console) -> dict[str, object]:
    from loader.cache import WarmCache

    config = _config(args)
    cache = WarmCache(args.cache_dir, args.budget)
    with _progress(console, not args.json) as bars:
        task = bars.add_task(f"warm {args.location}", total=None)
        result = cache.warm(
            args.location, config,
            progress=lambda n: bars.advance(task, n),
            on_plan=lambda total: bars.update(task, total=total or 1, completed=0 if total else 1),
        )
    out = result.to_json()
    if args.verify_local:
        out["verified"] = cache.verify(args.location)
        if not out["verified"]:
            raise SystemExit(_fail(args, f"{args.location}: staged copy failed SHA-256 verification", EXIT_FAILED))
    return out


def _cmd_warm_plan(args: argparse.Namespace, console: Console) -> dict[str, object]:
    from loader.cache import WarmCache
    from loader.warmplan import follow_plan, kube_core_api, label_node, load_plan, unlabel_dropped

    plan = load_plan(args.plan)
    config = _config(args)
    core = kube_core_api(args.kubeconfig) if args.label_node else None
    if core is not None:
        unlabel_dropped(core, args.node, plan.models_for(args.node))
    result = follow_plan(plan, args.node, WarmCache(args.cache_dir, args.budget), config)
    out = result.to_json()
    if core is not None:
        out["labels"] = label_node(core, args.node, result.staged)
    if result.failed:
        raise PartlyFailed(f"node {args.node}: staging failed for "
                           + "; ".join(f"{m}: {e}" for m, e in result.failed.items()), out)
    return out


def _cmd_pull(args: argparse.Namespace, console: Console) -> dict[str, object]:
    from loader.cache import open_checkpoint
    from loader.stream import LoadReport, check_device, stream_checkpoint

    device = check_device(args.device)  # before any I/O: a device this machine lacks is bad input
    config = _config(args, cache_dir=args.cache_dir)
    report = LoadReport(location=args.location)
    with contextlib.ExitStack() as stack:
        checkpoint = open_checkpoint(args.location, config, stack)  # holds a warm-pool copy against eviction
        bars = stack.enter_context(_progress(console, not args.json))
        task = bars.add_task(f"pull {args.location} -> {device}", total=checkpoint.tensor_bytes)
        for _name, tensor in stream_checkpoint(
            checkpoint, device, config, progress=lambda n: bars.advance(task, n), report=report
        ):
            if tensor.device.type == "cpu":
                _touch_pages(tensor)  # a mapped file is only read on first touch: count the reading
    return {
        "location": args.location, "loaded_from": report.resolved_from, "device": report.device,
        "mapped": report.mapped, "tensors": report.tensors, "bytes": report.bytes, "seconds": round(report.seconds, 3),
        "gb_per_s": round(report.gb_per_s, 3),
        "first_tensor_s": round(report.first_tensor_s, 3) if report.first_tensor_s is not None else None,
        "requests": report.fetch.requests, "retries": report.fetch.retries, "hedges": report.fetch.hedges,
        "hedge_wins": report.fetch.hedge_wins,
    }


def _touch_pages(tensor: torch.Tensor) -> None:
    """Read one byte of every page of a (contiguous) CPU tensor."""
    import torch

    raw = tensor.reshape(-1).view(torch.uint8)
    if raw.numel():
        int(raw[::_PAGE].sum())


def _cmd_inspect(args: argparse.Namespace, console: Console) -> dict[str, object]:
    from loader.cache import open_checkpoint

    checkpoint = open_checkpoint(args.location, _config(args))
    shards = [
        {"name": s.name, "bytes": s.info.size, "etag": s.info.etag, "tensors": len(s.header.tensors),
         "header_bytes": s.header.header_bytes, "sha256": s.sha256}
        for s in checkpoint.shards
    ]
    return {"location": args.location, "index": checkpoint.index_name, "bytes": checkpoint.total_bytes, "shards": shards}


def _cmd_make(args: argparse.Namespace, console: Console) -> dict[str, object]:
    from loader.make_checkpoint import CheckpointSpec, check_size_fits, layout_hidden, make_checkpoint

    spec = CheckpointSpec(args.size, shards=args.shards, hidden=args.hidden, dtype=args.dtype, seed=args.seed,
                          sha256_sidecars=args.sha256)
    check_size_fits(spec)
    paths = make_checkpoint(Path(args.dest), spec)
    return {"dest": str(args.dest), "shards": [str(p) for p in paths], "hidden": layout_hidden(spec),
            "requested_bytes": args.size, "bytes": sum(p.stat().st_size for p in paths)}


def _print_table(console: Console, title: str, data: dict[str, object]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in data.items():
        table.add_row(key, json.dumps(value) if isinstance(value, list | dict) else str(value))
    console.print(table)


def _fail(args: argparse.Namespace | None, message: str, code: int) -> int:
    """Report a failure in one line (and as a JSON object under ``--json``); returns the exit code."""
    if args is not None and getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_code": code}))
    print(f"warmscale-loader: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="warmscale-loader", description=__doc__.split("\n\n")[0], epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    warm = sub.add_parser("warm", help="stage a checkpoint in the node warm pool")
    warm.add_argument("location", help="s3://bucket/prefix, http(s)://..., or a local path")
    warm.add_argument("--cache-dir", type=Path, required=True, help="warm-pool directory (NVMe or /dev/shm)")
    warm.add_argument("--budget", type=parse_size, help="evict least recently used entries to stay under this size")
    warm.add_argument("--verify-local", action="store_true", help="re-hash the staged files afterwards")
    _add_loader_options(warm)

    plan = sub.add_parser("warm-plan", help="stage what the warm-pool plan puts on this node, evict the rest, "
                          "label the node")
    plan.add_argument("--plan", type=Path, required=True, help="the plan document (JSON, see loader/warmplan.py)")
    plan.add_argument("--node", required=True, help="this node's name (the downward API's spec.nodeName)")
    plan.add_argument("--cache-dir", type=Path, required=True, help="warm-pool directory (NVMe or /dev/shm)")
    plan.add_argument("--budget", type=parse_size, help="evict least recently used entries to stay under this size")
    plan.add_argument("--label-node", action="store_true", help="set staged.warmscale.io/<model> labels on the "
                      "node to what is staged (needs get and patch on nodes)")
    plan.add_argument("--kubeconfig", type=Path, help="with --label-node outside a pod (default: in-cluster, "
                      "else ~/.kube/config)")
    _add_loader_options(plan)

    pull = sub.add_parser("pull", help="load a checkpoint to a device and report throughput")
    pull.add_argument("location")
    pull.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    pull.add_argument("--cache-dir", type=Path, help="prefer a valid copy staged in this warm pool")
    _add_loader_options(pull)

    inspect = sub.add_parser("inspect", help="list a checkpoint's shards (validates every header)")
    inspect.add_argument("location")
    _add_loader_options(inspect)

    make = sub.add_parser("make-checkpoint", help="write a random-weight safetensors checkpoint")
    make.add_argument("dest", type=Path)
    make.add_argument("--size", type=parse_size, required=True, help="approximate total size, e.g. 3GB")
    make.add_argument("--shards", type=int, default=1)
    make.add_argument("--hidden", type=int, help="hidden size of the Llama-like layout (default: the largest up to "
                      "2048 that fits --size)")
    make.add_argument("--dtype", choices=["BF16", "F32"], default="BF16")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--sha256", action="store_true", help="write <shard>.sha256 sidecars")
    make.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``warmscale-loader`` console script."""
    from loader.errors import LoaderError, UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
    except UsageFailure as exc:
        return _fail(argparse.Namespace(json="--json" in argv), str(exc), EXIT_USAGE)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    console = Console(stderr=True)
    commands = {"warm": _cmd_warm, "warm-plan": _cmd_warm_plan, "pull": _cmd_pull, "inspect": _cmd_inspect, "make-checkpoint": _cmd_make}
    try:
        result = commands[args.command](args, console)
    except PartlyFailed as exc:
        if args.json:
            print(json.dumps({**exc.result, "error": str(exc), "exit_code": EXIT_FAILED}))
        print(f"warmscale-loader: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in exc.errors())
        return _fail(args, f"invalid setting: {errors}", EXIT_USAGE)
    except UsageError as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    except LoaderError as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    except OSError as exc:  # the local side: a full disk, a read-only cache directory
        return _fail(args, f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug; one line unless asked for the traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        return _fail(args, f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)", EXIT_INTERNAL)
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(Console(), args.command, result)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
