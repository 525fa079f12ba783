"""The REST API: autoscalers' state, operators' overrides and their audit trail (FastAPI)."""
from autoscaler.api.app import create_app
from autoscaler.api.status import AutoscalerState, MemoryStatusSource, StatusSource

__all__ = ["create_app", "AutoscalerState", "MemoryStatusSource", "StatusSource"]
