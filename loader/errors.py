"""Errors raised by the loader. Every message names the object (and the tensor, where one is involved)."""

from __future__ import annotations


class LoaderError(Exception):
    """Base class of every error the loader raises."""


class UsageError(LoaderError):
    """The caller asked for something the loader cannot do here (a device this machine lacks, a size too small)."""


class CheckpointFormatError(LoaderError):
    """A safetensors object or an index file is malformed."""

    def __init__(self, object_name: str, message: str, tensor: str | None = None) -> None:
        self.object_name = object_name
        self.tensor = tensor
        where = f"{object_name}" + (f", tensor {tensor!r}" if tensor is not None else "")
        super().__init__(f"{where}: {message}")


class SourceError(LoaderError):
    """Reading an object failed."""

    retryable: bool = False

    def __init__(self, object_name: str, message: str) -> None:
        self.object_name = object_name
        super().__init__(f"{object_name}: {message}")


class ObjectNotFoundError(SourceError):
    """The object (or a shard named by the index) does not exist."""


class AccessDeniedError(SourceError):
    """The credentials in use may not read the object."""


class ObjectChangedError(SourceError):
    """The object changed while it was being read (ETag or size mismatch)."""


class TransientSourceError(SourceError):
    """A failure worth retrying: throttling (503 SlowDown), 5xx, a reset or short read."""

    retryable = True


class RetriesExhaustedError(SourceError):
    """A range kept failing with transient errors until the attempt budget ran out."""


class IntegrityError(LoaderError):
    """Bytes read do not match the expected size, ETag or SHA-256 digest."""

    def __init__(self, object_name: str, message: str) -> None:
        self.object_name = object_name
        super().__init__(f"{object_name}: {message}")
