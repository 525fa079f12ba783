"""The warm-pool plan: which checkpoints each node stages, and the node agent that follows it.

The plan is one JSON document (published as the ``plan.json`` key of the ``warmscale-warm-plan``
ConfigMap, made by ``warmscale warm-pool plan``)::

    {"version": 1,
     "models": {"llama-3-8b": {"location": "s3://models/llama-3.1-8b", "bytes": 16060522496}},
     "nodes":  {"gpu-a": ["llama-3-8b"], "gpu-b": [], "*": []}}

``nodes`` maps a node name to the models it stages; ``"*"`` is for every node the plan does not
name (``{"*": [...every model...]}`` is the old "stage everything everywhere"). A node not named
and without ``"*"`` stages nothing.

``follow_plan`` is what the warm-pool DaemonSet runs on each node (``warmscale-loader warm-plan``):
it evicts the cached checkpoints its node is no longer planned to hold (an entry being read is left
for the next round), stages the planned ones, and returns the node labels that say what is staged:
``staged.warmscale.io/<model-slug>: "true"`` for each planned model whose copy is complete.
Engine Deployments prefer those nodes with preferred node affinity on that label.

Label keys: a qualified name is ``<prefix>/<name>``; the prefix a DNS subdomain (<= 253), the name
<= 63 characters of ``[A-Za-z0-9._-]`` starting and ending alphanumeric. Putting the model in the
name after a fixed prefix (``staged.warmscale.io/``) leaves all 63 characters to the model slug; a
model name that does not fit (or has other characters, e.g. ``meta-llama/Llama-3.1-8B``) is slugged:
lower-cased, runs of other characters become ``-``, and a slug cut to fit ends in 8 hex digits of
the name's SHA-256 so that two long names never share a label.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loader.errors import LoaderError, UsageError

if TYPE_CHECKING:
    from loader.cache import WarmCache
    from loader.config import LoaderConfig

PLAN_VERSION = 1
EVERY_NODE = "*"
LABEL_PREFIX = "staged.warmscale.io/"
LABEL_VALUE = "true"
_NAME_MAX = 63
_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")


class PlanError(UsageError):
    """The plan document is missing, not JSON, or not a valid plan; the message names the field."""


class PlannedModel(BaseModel):
    """Where a model's checkpoint lives and how big it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location: str = Field(min_length=1, description="s3://bucket/prefix, http(s)://... or a local path")
    bytes: int = Field(ge=0, description="checkpoint size (the planner's budget arithmetic)")


class WarmPlan(BaseModel):
    """The plan document (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = PLAN_VERSION
    generated_at: float | None = None
    models: dict[str, PlannedModel] = Field(default_factory=dict)
    nodes: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != PLAN_VERSION:
            raise ValueError(f"plan version {value} is not supported (this loader reads version {PLAN_VERSION})")
        return value

    @model_validator(mode="after")
    def _known_models(self) -> WarmPlan:
        for node, names in self.nodes.items():
            unknown = [n for n in names if n not in self.models]
            if unknown:
                raise ValueError(f"nodes.{node}: models {unknown} are not in 'models'")
            if len(set(names)) != len(names):
                raise ValueError(f"nodes.{node}: a model is listed twice: {names}")
        return self

    def models_for(self, node: str) -> list[str]:
        """The models `node` stages (its own entry, else the ``"*"`` entry, else none)."""
        return list(self.nodes.get(node, self.nodes.get(EVERY_NODE, [])))


def load_plan(path: Path | str) -> WarmPlan:
    """Read and validate a plan document; errors name the file and the field."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise PlanError(f"{path}: no plan file") from exc
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path}: not JSON ({exc})") from exc
    return parse_plan(raw, str(path))


def parse_plan(raw: object, source: str = "plan") -> WarmPlan:
    """Validate a decoded plan document."""
    try:
        return WarmPlan.model_validate(raw)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in exc.errors())
        raise PlanError(f"{source}: invalid plan: {errors}") from exc


def label_key(model: str) -> str:
    """The node label that says `model` is staged on a node (a valid qualified label key)."""
    slug = _SLUG_BAD.sub("-", model.lower()).strip("-._")
    if slug == model and len(slug) <= _NAME_MAX:
        return LABEL_PREFIX + slug
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    slug = slug[: _NAME_MAX - len(digest) - 1].rstrip("-._")
    return LABEL_PREFIX + (f"{slug}-{digest}" if slug else digest)


def node_labels(staged: list[str], current: dict[str, str]) -> dict[str, str | None]:
    """A merge patch for a node's labels: ours set for `staged`, ours not among them removed (None),
    everyone else's untouched."""
    want = {label_key(m): LABEL_VALUE for m in staged}
    patch: dict[str, str | None] = {k: None for k in current if k.startswith(LABEL_PREFIX) and k not in want}
    patch.update({k: v for k, v in want.items() if current.get(k) != v})
    return patch


@dataclass
class FollowResult:
    """What one round of following the plan did on one node."""

    node: str
    planned: list[str]
    staged: list[str] = field(default_factory=list)        # planned models whose copy is complete now
    downloaded: dict[str, int] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)       # locations removed because the plan dropped them
    busy: list[str] = field(default_factory=list)          # dropped, but being read: left for the next round
    failed: dict[str, str] = field(default_factory=dict)   # model -> error

    def to_json(self) -> dict[str, object]:
        return {"node": self.node, "planned": self.planned, "staged": self.staged, "downloaded": self.downloaded,
                "evicted": self.evicted, "busy": self.busy, "failed": self.failed}


def follow_plan(plan: WarmPlan, node: str, cache: WarmCache, config: LoaderConfig) -> FollowResult:
    """Evict what `node` should no longer hold, then stage what it should (one round)."""
    planned = plan.models_for(node)
    result = FollowResult(node, planned)
    keep = {plan.models[m].location.rstrip("/") for m in planned}
    for location in cache.locations():
        if location.rstrip("/") in keep:
            continue
        (result.evicted if cache.evict(location) else result.busy).append(location)
    for model in planned:
        try:
            warmed = cache.warm(plan.models[model].location, config)
        except (LoaderError, OSError) as exc:
            result.failed[model] = str(exc)
            continue
        result.staged.append(model)
        if warmed.downloaded_bytes:
            result.downloaded[model] = warmed.downloaded_bytes
    return result


class LabelError(LoaderError):
    """The node's labels could not be read or patched (the API server refused or could not be reached)."""


def kube_core_api(kubeconfig: Path | str | None = None):
    """A CoreV1Api: in-cluster when running in a pod (the ServiceAccount's token), else from `kubeconfig`."""
    import os

    import kubernetes

    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config()
            return kubernetes.client.CoreV1Api()
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise LabelError(f"no Kubernetes configuration ({exc})") from exc
    return kubernetes.client.CoreV1Api(client)


def label_node(core, node: str, staged: list[str]) -> dict[str, str | None]:
    """Make `node`'s ``staged.warmscale.io/`` labels say exactly `staged`; returns the patch applied."""
    import kubernetes
    import urllib3

    try:
        current = core.read_node(node).metadata.labels or {}
        patch = node_labels(staged, current)
        if patch:
            core.patch_node(node, {"metadata": {"labels": patch}})
    except kubernetes.client.ApiException as exc:
        raise LabelError(f"node {node}: labels not updated: {exc.status} {exc.reason}") from exc
    except (OSError, urllib3.exceptions.HTTPError) as exc:   # the API server could not be reached
        raise LabelError(f"node {node}: labels not updated: {exc}") from exc
    return patch


def unlabel_dropped(core, node: str, planned: list[str]) -> dict[str, str | None]:
    """Before evicting: remove the labels of models the plan no longer puts on `node` (so that no new
    engine is steered to a node about to lose its copy); labels of planned models stay as they are."""
    import kubernetes
    import urllib3

    try:
        current = core.read_node(node).metadata.labels or {}
    except kubernetes.client.ApiException as exc:
        raise LabelError(f"node {node}: labels not read: {exc.status} {exc.reason}") from exc
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        raise LabelError(f"node {node}: labels not read: {exc}") from exc
    return label_node(core, node, [m for m in planned if current.get(label_key(m)) == LABEL_VALUE])
