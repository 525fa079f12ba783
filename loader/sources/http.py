"""Objects under an ``http(s)://`` URL prefix, read with ``Range`` requests (urllib3)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import urllib3

from loader.errors import SourceError, TransientSourceError
from loader.sources.abort import AbortablePoolManager
from loader.sources.base import (
    Cancelled,
    ObjectInfo,
    error_for_response,
    object_size_from_content_range,
    read_fully,
)


class HttpSource:
    """Ranged GETs under a URL prefix. A query string (a presigned URL's, say) is kept on every request."""

    def __init__(self, url: str, *, max_connections: int = 64, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self._scheme, self._netloc, self._query = parts.scheme, parts.netloc, parts.query
        self._path = parts.path.rstrip("/")
        self.root = urlunsplit((parts.scheme, parts.netloc, self._path, "", ""))
        self._pool = AbortablePoolManager(
            maxsize=max_connections, block=False, retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        )

    def uri(self, name: str) -> str:
        path = f"{self._path}/{name}" if name else self._path
        return urlunsplit((self._scheme, self._netloc, path, self._query, ""))

    def _request(self, method: str, name: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        uri = self.uri(name)
        try:
            resp = self._pool.request(method, uri, headers=headers, preload_content=False, decode_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientSourceError(uri, f"connection error: {exc!r}") from exc
        if resp.status in (200, 206):
            return resp
        resp.drain_conn()
        resp.release_conn()
        raise error_for_response(uri, resp.status, f"HTTP {resp.status}")

    def stat(self, name: str) -> ObjectInfo:
        resp = self._request("HEAD", name, {})
        resp.release_conn()
        return ObjectInfo(int(resp.headers["Content-Length"]), resp.headers.get("ETag"))

    def head(self, name: str, length: int) -> tuple[bytes, ObjectInfo]:
        resp = self._request("GET", name, {"Range": f"bytes=0-{length - 1}"})
        try:
            # A server that ignores Range answers 200 with the whole object: read only what we asked for.
            data = resp.read(length)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientSourceError(self.uri(name), f"read failed: {exc!r}") from exc
        finally:
            resp.close()
        size = object_size_from_content_range(resp.headers.get("Content-Range"),
                                              resp.headers.get("Content-Length", len(data)))
        return data, ObjectInfo(size, resp.headers.get("ETag"))

    def read_into(
        self, name: str, offset: int, buf: memoryview, etag: str | None, cancelled: Cancelled | None = None
    ) -> None:
        headers = {"Range": f"bytes={offset}-{offset + len(buf) - 1}"}
        if etag:
            headers["If-Match"] = etag
        resp = self._request("GET", name, headers)
        if resp.status != 206 or int(resp.headers.get("Content-Length", -1)) != len(buf):
            resp.close()
            raise SourceError(self.uri(name), f"server ignored the Range request (status {resp.status})")
        read_fully(self.uri(name), resp, buf, cancelled)

    def list(self) -> list[str]:
        raise SourceError(self.root, "http(s) sources cannot be listed; name a .safetensors file or an index")
