"""A tiny kustomization renderer for the tests: the `resources:` list only (files and directories
holding a kustomization.yaml), in order, every YAML document. The shipped kustomizations use
nothing else (a test checks that their keys are only apiVersion, kind and resources)."""
from __future__ import annotations

from pathlib import Path

import yaml

ALLOWED_KEYS = {"apiVersion", "kind", "resources"}


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - ALLOWED_KEYS
    if unknown:
        raise ValueError(f"{directory / 'kustomization.yaml'}: this renderer handles only {sorted(ALLOWED_KEYS)}, "
                         f"found {sorted(unknown)}")
    objects: list[dict] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects
