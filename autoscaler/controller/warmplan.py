"""The controller publishes the warm-pool plan on a schedule (`--warm-pool-config fleet.yaml`).

Every `--warm-pool-every` seconds the leader plans which checkpoints each GPU node stages
(forecasting/warmpool.py) from the demand forecasts of its models with `spec.forecasting.enabled`
and their replica counts, starting from the plan in force so that staged copies stay put, and
replaces the `plan.json` of the `warmscale-warm-plan` ConfigMap that the warm-pool DaemonSet mounts
(manifests/warm-pool/). It needs get and update on that one ConfigMap
(manifests/warm-pool/controller-rbac.yaml), nothing else.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import kubernetes

from autoscaler.contract import DemandForecast
from forecasting.warmpool import WarmPoolConfig, WarmPoolPlan
from forecasting.warmpool_cli import PLAN_CONFIGMAP, PLAN_KEY, WARM_POOL_NAMESPACE, make_plan

__all__ = ["PLAN_CONFIGMAP", "WARM_POOL_NAMESPACE", "WarmPlanPublisher"]


class PlanNotInstalled(RuntimeError):
    """The plan's ConfigMap is missing or out of reach: the warm pool is not installed."""


@dataclass
class WarmPlanPublisher:
    config: WarmPoolConfig
    core: kubernetes.client.CoreV1Api
    namespace: str = WARM_POOL_NAMESPACE
    name: str = PLAN_CONFIGMAP

    def publish(self, forecasts: Sequence[DemandForecast], replicas: dict[str, int], now: float) -> WarmPoolPlan:
        """Plan from `forecasts` (made at `now`) and the running `replicas`, and replace the ConfigMap's plan."""
        current = self._read()
        placement = _placement(current.data or {}, self.namespace, self.name)
        plan = make_plan(self.config, list(forecasts), now, replicas, placement)
        document = plan.document(self.config, generated_at=now)
        current.data = {**(current.data or {}), PLAN_KEY: json.dumps(document, indent=1, sort_keys=True)}
        self.core.replace_namespaced_config_map(self.name, self.namespace, current)
        return plan

    def _read(self):
        try:
            return self.core.read_namespaced_config_map(self.name, self.namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status in (403, 404):
                why = "not found" if exc.status == 404 else "forbidden to this controller"
                raise PlanNotInstalled(f"ConfigMap {self.namespace}/{self.name} {why}: install the warm pool "
                                       "(kubectl apply -k manifests/warm-pool/ ships the ConfigMap and the Role that "
                                       "lets the controller update it)") from None
            raise


def _placement(data: dict[str, str], namespace: str, name: str) -> dict[str, list[str]]:
    """The plan in force, by node; an unreadable one counts as empty (the new plan replaces it)."""
    from loader.warmplan import PlanError, parse_plan

    try:
        return dict(parse_plan(json.loads(data.get(PLAN_KEY) or "{}"), f"{namespace}/{name}").nodes)
    except (PlanError, ValueError):
        return {}
