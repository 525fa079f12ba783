"""The interface every object source implements, and the helpers they share."""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from loader.errors import (
    AccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    SourceError,
    TransientSourceError,
)
from loader.sources.abort import current_handle, detach_current


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Size and version tag of one object; ``etag`` is None where the source has none."""

    size: int
    etag: str | None


class ReadCancelled(Exception):
    """The caller asked a read to stop (a hedged twin already delivered the range)."""


# A read fills a whole chunk before it returns, so this is how often a read reports its progress and can be
# cancelled: 128 KiB is 0.1 s on a connection at a tenth of 15 MB/s, and a few microseconds of Python at speed.
CHUNK_BYTES = 128 * 1024
Cancelled = Callable[[], bool]


class PartialReadError(TransientSourceError):
    """A read broke off after ``received`` bytes had landed in the buffer; a retry may resume there."""

    def __init__(self, object_name: str, message: str, received: int) -> None:
        super().__init__(object_name, message)
        self.received = received


@runtime_checkable
class ObjectSource(Protocol):
    """A flat namespace of objects under one root (a directory, an S3 prefix or a URL prefix)."""

    root: str

    def uri(self, name: str) -> str:
        """The full address of ``name``, for messages."""

    def head(self, name: str, length: int) -> tuple[bytes, ObjectInfo]:
        """Read up to the first ``length`` bytes of ``name`` and its size and ETag in one request."""

    def stat(self, name: str) -> ObjectInfo:
        """Size and ETag of ``name``; raises ObjectNotFoundError if it does not exist."""

    def read_into(
        self, name: str, offset: int, buf: memoryview, etag: str | None, cancelled: Cancelled | None = None
    ) -> None:
        """Fill ``buf`` with the bytes of ``name`` from ``offset``; if ``etag`` is given, the object must still
        have it. Raises ReadCancelled when ``cancelled()`` turns true between chunks."""

    def list(self) -> list[str]:
        """Names of all objects under the root (recursively), sorted."""


def read_fully(object_name: str, response: object, buf: memoryview, cancelled: Cancelled | None = None) -> None:
    """Read exactly ``len(buf)`` body bytes of a urllib3 ``response`` into ``buf``, then return its
    connection to the pool. A read that fails or is cancelled closes the response (its connection
    is mid-body and cannot be reused) and raises. The connection is detached from this thread's read handle
    (``loader.sources.abort``) before the pool can hand it to another read."""
    try:
        _read_into(object_name, response, buf, cancelled)
    except (PartialReadError, ReadCancelled):
        detach_current()
        response.close()  # type: ignore[attr-defined]
        raise
    if detach_current():  # aborted just as it finished: its socket may be shut down, so it is not reused
        response.close()  # type: ignore[attr-defined]
    else:
        response.release_conn()  # type: ignore[attr-defined]


def _read_into(object_name: str, response: object, buf: memoryview, cancelled: Cancelled | None) -> None:
    """Read exactly ``len(buf)`` body bytes into ``buf`` without intermediate copies.

    urllib3's ``HTTPResponse.readinto`` reads into a temporary ``bytes`` and copies it; the
    ``http.client.HTTPResponse`` below it reads from the socket straight into our buffer, so we use
    that when it is there (the body is raw bytes, no content-encoding to undo).
    """
    raw = getattr(response, "_fp", None)
    reader = raw if isinstance(raw, http.client.HTTPResponse) else response
    received = 0
    total = len(buf)
    handle = current_handle()
    try:
        while received < total:
            if handle is not None:
                handle.received = received
            if cancelled is not None and cancelled():
                raise ReadCancelled
            n = reader.readinto(buf[received:received + CHUNK_BYTES])  # type: ignore[attr-defined]
            if not n:
                raise PartialReadError(
                    object_name, f"connection closed after {received} of {total} bytes", received
                )
            received += n
    except (PartialReadError, ReadCancelled):
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: http.client raises it when reading from a response closed under it.
        raise PartialReadError(object_name, f"read failed after {received} of {total} bytes: {exc!r}", received) from exc
    except Exception as exc:  # urllib3 / botocore wrap socket errors in their own classes
        if isinstance(exc, SourceError):
            raise
        raise PartialReadError(object_name, f"read failed after {received} of {total} bytes: {exc!r}", received) from exc


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def object_size_from_content_range(content_range: str | None, fallback: int) -> int:
    """The object's full size from a ``Content-Range: bytes a-b/size`` header, else `fallback`."""
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(3)) if match else int(fallback)


# S3 error codes (an S3-compatible store names the error besides the HTTP status; the name wins).
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                     "XAdminUserNotFound"}  # the last: versitygw's answer (a 404) to an unknown access key
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_CHANGED_CODES = {"PreconditionFailed", "412"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "RequestTimeout"}
CREDENTIALS_HINT = ("check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) "
                    "and that they belong to this endpoint")


def error_for_response(uri: str, status: int | None, text: str, code: str = "") -> SourceError:
    """The error for a failed request: by the store's error `code` where it gives one, else by HTTP `status`."""
    if code in _CREDENTIAL_CODES:
        return AccessDeniedError(uri, f"the server rejected the credentials ({text}); {CREDENTIALS_HINT}")
    if code in _NOT_FOUND_CODES or (status == 404 and not code):
        return ObjectNotFoundError(uri, f"object not found ({text})")
    if status == 404 and code not in _DENIED_CODES:  # a 404 that names something other than the object
        return SourceError(uri, f"the server answered 404 {text}")
    if code in _DENIED_CODES or status in (401, 403):
        return AccessDeniedError(uri, f"access denied ({text}); {CREDENTIALS_HINT}")
    if code in _CHANGED_CODES or status == 412:
        return ObjectChangedError(uri, f"object changed while loading ({text})")
    if status is not None and (status >= 500 or status == 429) or code in _TRANSIENT_CODES:
        return TransientSourceError(uri, f"server error {text}")
    return SourceError(uri, text)
