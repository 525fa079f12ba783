"""Sensors: where observations come from (Prometheus, a pod's /metrics)."""
