"""`warmscale override`: the command-line client of the overrides API."""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
_EXIT_BY_STATUS = {400: EXIT_USAGE, 401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT,
                   422: EXIT_USAGE, 503: EXIT_UNAVAILABLE}
KUBECONFIG_EXTENSION = "warmscale.io/api"

EPILOG = f"""\
The API address and token come from --api/--token, else WARMSCALE_API/WARMSCALE_TOKEN, else the
kubeconfig's current context (its user's token; the address from the cluster extension named
{KUBECONFIG_EXTENSION!r} with a 'server' field).

exit codes: 0 ok, 1 unexpected error, 2 bad input (the message names the field), 3 not
authenticated or not allowed, 4 not found, 5 conflict, 6 API or Kubernetes API server unreachable"""


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("override", help="pin, bound, pause or pre-warm an autoscaler; list, delete, audit",
                                   description="Operators' overrides through the warmscale API.", epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=lambda args: _usage(parser))
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        _connection_args(p)
        p.set_defaults(handler=lambda args: _run(handler, args))
        return p

    pin = action("pin", "hold an autoscaler at exactly N replicas", _create)
    pin.add_argument("model", metavar="MODEL", help="ModelAutoscaler name")
    pin.add_argument("replicas", type=int, metavar="N")
    _create_args(pin, "pin")
    prewarm = action("prewarm", "keep at least N replicas", _create)
    prewarm.add_argument("model", metavar="MODEL")
    prewarm.add_argument("replicas", type=int, metavar="N")
    _create_args(prewarm, "prewarm")
    bounds = action("bounds", "keep the count within --min and/or --max", _create)
    bounds.add_argument("model", metavar="MODEL")
    bounds.add_argument("--min", dest="min_replicas", type=int)
    bounds.add_argument("--max", dest="max_replicas", type=int)
    _create_args(bounds, "bounds")
    pause = action("pause", "hold the current count (or only stop growing / shrinking)", _create)
    pause.add_argument("model", metavar="MODEL")
    pause.add_argument("--direction", choices=["both", "up", "down"], default="both",
                       help="up: never grow; down: never shrink; both (default): hold")
    _create_args(pause, "pause")

    listing = action("list", "list overrides", _list)
    listing.add_argument("model", metavar="MODEL", nargs="?")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    listing.add_argument("--active", action="store_true", help="only those in force now")
    get = action("get", "show one override", _get)
    get.add_argument("name", metavar="NAME")
    delete = action("delete", "delete an override (it stops at once)", _delete)
    delete.add_argument("name", metavar="NAME")
    audit = action("audit", "who changed which override, when, and the value before", _audit)
    audit.add_argument("--model", help="only this autoscaler's overrides")
    audit.add_argument("--override", help="only this override")
    audit.add_argument("-A", "--all-namespaces", action="store_true")
    audit.add_argument("--limit", type=int, default=50)
    status = action("status", "autoscalers with their current and desired counts", _status)
    status.add_argument("-A", "--all-namespaces", action="store_true")


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", help="API address, e.g. http://127.0.0.1:8080 (env WARMSCALE_API)")
    p.add_argument("--token", help="bearer token (env WARMSCALE_TOKEN)")
    p.add_argument("--kubeconfig", help="kubeconfig to read the token and address from (env KUBECONFIG)")
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else 'default')")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")


def _create_args(p: argparse.ArgumentParser, kind: str) -> None:
    p.set_defaults(kind=kind)
    expiry = p.add_mutually_exclusive_group(required=True)
    expiry.add_argument("--for", dest="duration", help="how long, e.g. 30m, 2h, 1h30m, 7d")
    expiry.add_argument("--until", dest="expires_at", help="RFC 3339 time, e.g. 2026-12-24T18:00:00Z")
    p.add_argument("--reason", required=True, help="why (shown in status, events and the audit trail)")
    p.add_argument("--name", help="override name (generated when absent)")
    p.add_argument("--cron", help="scheduled: open a window at each fire time, e.g. '0 9 * * 1-5'")
    p.add_argument("--tz", default="UTC", help="time zone of --cron (default UTC)")
    p.add_argument("--window", help="scheduled: how long each window lasts, e.g. 8h")
    p.add_argument("--idempotency-key", help="retrying with the same key never creates twice (default: random)")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _run(handler, args: argparse.Namespace) -> int:
    try:
        client = _Client.from_args(args)
        with client:
            return handler(client, args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code


# ---------------------------------------------------------------------------- actions
def _create(client: "_Client", args: argparse.Namespace) -> int:
    kind = args.kind if args.kind != "pause" or args.direction == "both" else f"pause_{args.direction}"
    body: dict[str, Any] = {"target": args.model, "kind": kind, "reason": args.reason}
    for field in ("name", "duration", "expires_at", "replicas", "min_replicas", "max_replicas"):
        if getattr(args, field, None) is not None:
            body[field] = getattr(args, field)
    if args.cron or args.window:
        if not (args.cron and args.window):
            raise CliError("a schedule needs both --cron and --window", EXIT_USAGE)
        body["schedule"] = {"cron": args.cron, "time_zone": args.tz, "duration": args.window}
    key = args.idempotency_key or uuid.uuid4().hex
    answer = client.call("POST", f"/v1/namespaces/{client.namespace}/overrides", json_body=body,
                         headers={"Idempotency-Key": key}, retry=True)
    if args.json:
        return _print_json(answer)
    ov = answer["override"]
    print(f"created {ov['namespace']}/{ov['name']}: {_describe(ov)}")
    for warning in answer.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _list(client: "_Client", args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": 500}
    if not args.all_namespaces:
        params["namespace"] = client.namespace
    if args.model:
        params["autoscaler"] = args.model
    if args.active:
        params["active"] = "true"
    items = client.collect("/v1/overrides", params)
    if args.json:
        return _print_json({"items": items})
    _table(["NAMESPACE", "NAME", "TARGET", "KIND", "VALUE", "ACTIVE", "EXPIRES", "AUTHOR", "REASON"],
           [[o["namespace"], o["name"], o["target"], o["kind"], _value(o), "yes" if o["active"] else "no",
             o["expires_at"], o["author"], o["reason"]] for o in items])
    return EXIT_OK


def _get(client: "_Client", args: argparse.Namespace) -> int:
    ov = client.call("GET", f"/v1/namespaces/{client.namespace}/overrides/{args.name}")
    if args.json:
        return _print_json(ov)
    print(f"{ov['namespace']}/{ov['name']}: {_describe(ov)}; author {ov['author']}; reason: {ov['reason']}")
    return EXIT_OK


def _delete(client: "_Client", args: argparse.Namespace) -> int:
    ov = client.call("DELETE", f"/v1/namespaces/{client.namespace}/overrides/{args.name}")
    if args.json:
        return _print_json(ov)
    print(f"deleted {ov['namespace']}/{ov['name']} ({_describe(ov)})")
    return EXIT_OK


def _audit(client: "_Client", args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": max(1, min(args.limit, 1000))}
    if not args.all_namespaces:
        params["namespace"] = client.namespace
    for field, value in (("autoscaler", args.model), ("override", args.override)):
        if value:
            params[field] = value
    items = client.call("GET", "/v1/audit", params=params)["items"]
    if args.json:
        return _print_json({"items": items})
    _table(["TIME", "ACTOR", "ACTION", "NAMESPACE", "OVERRIDE", "TARGET", "VALUE"],
           [[e["time"], e["actor"], e["action"], e["namespace"], e["override"], e["target"],
             _describe(e["current"] or e["previous"] or {})] for e in items])
    return EXIT_OK


def _status(client: "_Client", args: argparse.Namespace) -> int:
    params = {"limit": 1000} if args.all_namespaces else {"limit": 1000, "namespace": client.namespace}
    items = client.collect("/v1/autoscalers", params)
    if args.json:
        return _print_json({"items": items})
    _table(["NAMESPACE", "NAME", "MODEL", "CURRENT", "DESIRED", "READY", "LOADING", "MIN", "MAX", "OVERRIDE"],
           [[a["namespace"], a["name"], a["model"], a["current"], a["desired"], a["ready"], a["loading"],
             a["min_replicas"], a["max_replicas"], a["active_override"] or "-"] for a in items])
    return EXIT_OK


# ---------------------------------------------------------------------------- output
def _value(ov: dict) -> str:
    if ov.get("kind") == "bounds":
        lo, hi = ov.get("min_replicas"), ov.get("max_replicas")
        return f"{'' if lo is None else lo}..{'' if hi is None else hi}"
    return "" if ov.get("replicas") is None else str(ov["replicas"])


def _describe(ov: dict) -> str:
    if not ov:
        return ""
    text = f"{ov.get('kind')} {_value(ov)}".strip() + f" on {ov.get('target')} until {ov.get('expires_at')}"
    if ov.get("schedule"):
        s = ov["schedule"]
        window = s.get("duration") or f"{s.get('duration_s')}s"
        text += f", windows '{s['cron']}' ({s['time_zone']}) lasting {window}"
    return text


def _table(header: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(*header, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=True).print(table)


def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------- HTTP
class _Client:
    def __init__(self, base: str, token: str | None, namespace: str, timeout: float) -> None:
        import httpx
        self.namespace = namespace
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base.rstrip("/"), headers=headers, timeout=timeout)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "_Client":
        kube = _kubeconfig(args.kubeconfig)
        base = args.api or os.environ.get("WARMSCALE_API") or kube.get("api")
        if not base:
            raise CliError("no API address: pass --api, set WARMSCALE_API, or add a cluster extension "
                           f"{KUBECONFIG_EXTENSION!r} with a 'server' field to the kubeconfig", EXIT_USAGE)
        if not base.startswith(("http://", "https://")):
            raise CliError(f"API address {base!r} must start with http:// or https://", EXIT_USAGE)
        token = args.token or os.environ.get("WARMSCALE_TOKEN") or kube.get("token")
        return cls(base, token, args.namespace or kube.get("namespace") or "default", args.timeout)

    def __enter__(self) -> "_Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._http.close()

    def call(self, method: str, path: str, params: dict | None = None, json_body: dict | None = None,
             headers: dict | None = None, retry: bool = False) -> Any:
        import httpx
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, params=params, json=json_body, headers=headers)
            except httpx.HTTPError as err:
                if retry and attempt == 1:
                    continue
                raise CliError(f"cannot reach the API at {self._http.base_url}: {err.__class__.__name__}: {err}",
                               EXIT_UNAVAILABLE) from None
            if response.status_code == 503 and retry and attempt == 1:
                continue
            return _answer(response)
        raise AssertionError("unreachable")

    def collect(self, path: str, params: dict) -> list[dict]:
        items, token = [], None
        while True:
            page = self.call("GET", path, params={**params, **({"continue": token} if token else {})})
            items.extend(page["items"])
            token = page.get("continue")
            if not token:
                return items


def _answer(response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success and data is not None:
        return data
    error = (data or {}).get("error") if isinstance(data, dict) else None
    if not error:
        raise CliError(f"the API answered {response.status_code} {response.reason_phrase}", EXIT_ERROR)
    message = error.get("message", "")
    if error.get("field"):
        message += f" (field: {error['field']}"
        message += f", value: {error['value']!r})" if error.get("value") is not None else ")"
    if response.status_code == 503 and response.headers.get("Retry-After"):
        message += f"; retry after {response.headers['Retry-After']} s"
    raise CliError(message, _EXIT_BY_STATUS.get(response.status_code, EXIT_ERROR))


def _kubeconfig(path: str | None) -> dict[str, str]:
    """Token, namespace and API address from the kubeconfig's current context ({} when there is none)."""
    import yaml
    candidates = [path] if path else (os.environ.get("KUBECONFIG", "").split(os.pathsep) + ["~/.kube/config"])
    for candidate in filter(None, candidates):
        file = Path(candidate).expanduser()
        if not file.is_file():
            if path:
                raise CliError(f"kubeconfig {file} does not exist", EXIT_USAGE)
            continue
        try:
            config = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise CliError(f"kubeconfig {file} cannot be read: {err}", EXIT_USAGE) from None
        return _from_context(config)
    return {}


def _from_context(config: dict) -> dict[str, str]:
    def named(section: str, name: str | None) -> dict:
        return next((e.get(section[:-1]) or {} for e in config.get(section) or [] if e.get("name") == name), {})
    context = named("contexts", config.get("current-context"))
    user, cluster = named("users", context.get("user")), named("clusters", context.get("cluster"))
    out = {"token": user.get("token"), "namespace": context.get("namespace")}
    for ext in cluster.get("extensions") or []:
        if ext.get("name") == KUBECONFIG_EXTENSION:
            out["api"] = (ext.get("extension") or {}).get("server")
    return {k: v for k, v in out.items() if v}
