"""Objects under an ``s3://bucket/prefix`` location, read with boto3.

Credentials come from boto3's standard chain (environment, shared config/credentials files,
web identity, instance metadata). The endpoint can be overridden (``endpoint_url`` argument, or
boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) for S3-compatible stores.
botocore's retries are switched off: the pipeline retries per range, resumes where a broken
read stopped, and hedges slow ranges, which botocore cannot do (it retries whole requests).
"""

from __future__ import annotations

import os

import boto3
import botocore.config
import botocore.exceptions

from loader.errors import AccessDeniedError, ObjectChangedError, SourceError, TransientSourceError
from loader.sources.abort import make_abortable
from loader.sources.base import (
    CREDENTIALS_HINT,
    Cancelled,
    ObjectInfo,
    error_for_response,
    object_size_from_content_range,
    read_fully,
)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key.strip("/")


class S3Source:
    """Ranged GETs against one bucket prefix; safe to share between threads."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_connections: int = 64,
        timeout_s: float = 30.0,
        client: object | None = None,
    ) -> None:
        self.bucket, self.prefix = split_s3_uri(uri)
        self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = botocore.config.Config(
            max_pool_connections=max_connections,
            retries={"total_max_attempts": 1},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            tcp_keepalive=True,
            # Path-style works with every S3-compatible store behind a custom endpoint.
            s3={"addressing_style": "path" if endpoint else "auto"},
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required",
        )
        self._client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region, config=config
        )
        # A read whose hedged twin won is aborted at once (its connection shut down), not at its next chunk.
        self.abortable = make_abortable(self._client)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def _translate(self, name: str, exc: Exception) -> SourceError:
        uri = self.uri(name)
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            text = f"{code or status}: {err.get('Message', '') or exc}"
            return error_for_response(uri, status, text, code)
        if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
            return AccessDeniedError(uri, f"{exc}; {CREDENTIALS_HINT}")
        if isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
            return TransientSourceError(uri, f"connection error: {exc!r}")
        return SourceError(uri, repr(exc))

    def head(self, name: str, length: int) -> tuple[bytes, ObjectInfo]:
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self._key(name), Range=f"bytes=0-{length - 1}")
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # empty object
                return b"", self.stat(name)
            raise self._translate(name, exc) from exc
        except Exception as exc:
            raise self._translate(name, exc) from exc
        body = resp["Body"]
        try:
            data = body.read()
        except Exception as exc:
            raise self._translate(name, exc) from exc
        finally:
            body.close()
        size = object_size_from_content_range(resp.get("ContentRange"), resp["ContentLength"])
        return data, ObjectInfo(size, resp.get("ETag"))

    def stat(self, name: str) -> ObjectInfo:
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except botocore.exceptions.ClientError as exc:
            # A HEAD response has no body, so the store's reason for a refusal (InvalidAccessKeyId,
            # SignatureDoesNotMatch...) is lost; a one-byte GET hears it. (A 404 is left alone: it is
            # the common answer to probing for an index, and a listing follows that names the reason.)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (400, 401, 403):
                return self.head(name, 1)[1]
            raise self._translate(name, exc) from exc
        except Exception as exc:
            raise self._translate(name, exc) from exc
        return ObjectInfo(int(resp["ContentLength"]), resp.get("ETag"))

    def read_into(
        self, name: str, offset: int, buf: memoryview, etag: str | None, cancelled: Cancelled | None = None
    ) -> None:
        kwargs = {"IfMatch": etag} if etag else {}
        try:
            resp = self._client.get_object(
                Bucket=self.bucket, Key=self._key(name), Range=f"bytes={offset}-{offset + len(buf) - 1}", **kwargs
            )
        except Exception as exc:
            raise self._translate(name, exc) from exc
        body = resp["Body"]
        if int(resp["ContentLength"]) != len(buf):
            body.close()
            raise ObjectChangedError(
                self.uri(name), f"asked for {len(buf)} bytes at {offset}, server sent {resp['ContentLength']}"
            )
        raw = body._raw_stream  # urllib3 response; see read_fully for why we go below botocore
        read_fully(self.uri(name), raw, buf, cancelled)

    def list(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                names.extend(obj["Key"][len(prefix):] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._translate("", exc) from exc
        return sorted(names)
