"""Objects in a local directory (or a single local file's directory)."""

from __future__ import annotations

import os
from pathlib import Path

from loader.errors import AccessDeniedError, IntegrityError, ObjectChangedError, ObjectNotFoundError
from loader.sources.base import Cancelled, ObjectInfo


def local_etag(st: os.stat_result) -> str:
    """A version tag for a local file: changes whenever the file is rewritten."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalSource:
    """Reads with ``pread`` into the caller's buffer; the kernel copies from the page cache once."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root))
        self._dir = Path(root)

    def uri(self, name: str) -> str:
        return str(self._dir / name)

    def _open(self, name: str) -> int:
        path = self._dir / name
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFoundError(str(path), "no such file") from None
        except NotADirectoryError:
            raise ObjectNotFoundError(str(path), f"{self._dir} is not a directory") from None
        except IsADirectoryError:
            raise ObjectNotFoundError(str(path), "a directory, not a file") from None
        except PermissionError:
            raise AccessDeniedError(str(path), "permission denied") from None

    def stat(self, name: str) -> ObjectInfo:
        fd = self._open(name)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return ObjectInfo(st.st_size, local_etag(st))

    def head(self, name: str, length: int) -> tuple[bytes, ObjectInfo]:
        fd = self._open(name)
        try:
            st = os.fstat(fd)
            return os.pread(fd, length, 0), ObjectInfo(st.st_size, local_etag(st))
        finally:
            os.close(fd)

    def read_into(
        self, name: str, offset: int, buf: memoryview, etag: str | None, cancelled: Cancelled | None = None
    ) -> None:
        fd = self._open(name)
        try:
            if etag is not None and local_etag(os.fstat(fd)) != etag:
                raise ObjectChangedError(self.uri(name), "file changed while loading")
            done = 0
            while done < len(buf):
                n = os.preadv(fd, [buf[done:]], offset + done)
                if n == 0:
                    raise IntegrityError(
                        self.uri(name), f"file ends at {offset + done}, expected {len(buf) - done} more bytes"
                    )
                done += n
        finally:
            os.close(fd)

    def list(self) -> list[str]:
        return sorted(str(p.relative_to(self._dir)) for p in self._dir.rglob("*") if p.is_file())
