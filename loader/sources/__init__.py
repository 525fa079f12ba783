"""Object sources: local directories, ``s3://`` prefixes and ``http(s)://`` URL prefixes."""

from __future__ import annotations

from pathlib import Path

from loader.errors import CheckpointFormatError
from loader.sources.base import ObjectInfo, ObjectSource, PartialReadError
from loader.sources.http import HttpSource
from loader.sources.local import LocalSource

__all__ = ["ObjectInfo", "ObjectSource", "PartialReadError", "open_source", "LocalSource", "HttpSource"]


def open_source(
    location: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    max_connections: int = 64,
) -> tuple[ObjectSource, str | None]:
    """Open the source holding ``location`` -> (source rooted at its directory, file name or None).

    ``location`` is a checkpoint directory/prefix, or a single ``.safetensors`` / index file in one.
    """
    stripped, query = location, ""
    if location.startswith(("http://", "https://")) and "?" in location:
        stripped, _, query = location.partition("?")  # e.g. a presigned URL of one object
    stripped = stripped.rstrip("/")
    name: str | None = None
    if stripped.endswith((".safetensors", ".json")):
        stripped, _, name = stripped.rpartition("/")
    if query:
        stripped = f"{stripped}?{query}"
    if stripped.startswith("s3://"):
        from loader.sources.s3 import S3Source  # boto3 is imported only when S3 is used

        return S3Source(stripped, endpoint_url=endpoint_url, region=region, max_connections=max_connections), name
    if stripped.startswith(("http://", "https://")):
        return HttpSource(stripped, max_connections=max_connections), name
    if stripped.startswith("file://"):
        stripped = stripped[len("file://"):]
    root = Path(stripped or ".")
    if root.is_file():
        raise CheckpointFormatError(
            str(root), "a file that is neither .safetensors nor an index (.json): give a checkpoint directory, "
            "a .safetensors file or its model.safetensors.index.json"
        )
    return LocalSource(root), name
