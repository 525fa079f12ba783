"""Abort a ranged GET from another thread: when a hedged copy of a range wins, the slower request's
connection is shut down at once instead of at its next chunk boundary or read timeout.

The fetcher gives each read a ``ReadHandle`` and runs the source's ``read_into`` inside
``reading(handle)``. HTTP connections made by ``AbortablePoolManager`` (the HTTP source) or by an S3
client passed through ``make_abortable`` attach their socket to the calling thread's handle just before
they wait for the response, and ``read_fully`` detaches it before the connection goes back to the pool,
so an abort only ever reaches the socket of the read it was meant for. ``ReadHandle.abort`` shuts the
socket down (``shutdown``, not ``close``: the reading thread still owns the descriptor and closes it as it
unwinds): a ``recv`` blocked on it returns at once, the read fails, and its connection is dropped, not
reused. Sources with no socket (local files) ignore the handle; their reads stop at the next chunk.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)
_current = threading.local()


class ReadHandle:
    """One read that another thread may abort. ``aborted`` stays true once set."""

    __slots__ = ("_lock", "_sock", "aborted", "received")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.aborted = False
        self.received = 0  # body bytes of the current attempt so far, as its source reports them at chunk boundaries

    def attach(self, sock: socket.socket | None) -> None:
        """The socket this read now waits on (shut down at once if the read was already aborted)."""
        if sock is None:
            return
        with self._lock:
            self._sock = sock
            if self.aborted:
                _shutdown(sock)

    def detach(self) -> bool:
        """Forget the socket (its connection is about to be reused); returns whether the read was aborted,
        in which case the socket may be shut down and the connection must be closed, not reused."""
        with self._lock:
            self._sock = None
            return self.aborted

    def abort(self) -> None:
        """Mark the read aborted and shut its socket down, waking a thread blocked reading from it."""
        with self._lock:
            self.aborted = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def reading(handle: ReadHandle | None) -> Iterator[None]:
    """Reads by this thread inside the block attach their sockets to ``handle``."""
    _current.handle = handle
    try:
        yield
    finally:
        _current.handle = None
        if handle is not None:
            handle.detach()


def current_handle() -> ReadHandle | None:
    """The handle of the read this thread is running, if any."""
    return getattr(_current, "handle", None)


def detach_current() -> bool:
    """Detach this thread's read from its socket before the connection goes back to the pool; True if the
    read was aborted meanwhile (the connection must then be closed)."""
    handle = current_handle()
    return handle.detach() if handle is not None else False


class _AttachOnResponse:
    """Connection mixin: attach the socket to the thread's read handle before waiting for the response."""

    def getresponse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = current_handle()
        if handle is not None:
            handle.attach(getattr(self, "sock", None))
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


def abortable_pool_classes(pool_classes: dict[str, type]) -> dict[str, type]:
    """Subclasses of ``pool_classes`` (scheme -> connection pool class) whose connections attach to read handles."""
    out = {}
    for scheme, pool_cls in pool_classes.items():
        conn_cls = type(f"Abortable{pool_cls.ConnectionCls.__name__}", (_AttachOnResponse, pool_cls.ConnectionCls), {})
        out[scheme] = type(f"Abortable{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": conn_cls})
    return out


class AbortablePoolManager(urllib3.PoolManager):
    """A urllib3 pool manager whose connections attach to read handles."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = abortable_pool_classes({"http": HTTPConnectionPool, "https": HTTPSConnectionPool})


def make_abortable(client: object) -> bool:
    """Make a boto3 client's connections attach to read handles; False (and reads stop at chunk boundaries
    only) where botocore's internals are not as expected."""
    try:
        session = client._endpoint.http_session  # type: ignore[attr-defined]
        classes = abortable_pool_classes(session._pool_classes_by_scheme)
        session._pool_classes_by_scheme = classes
        session._manager.pool_classes_by_scheme = classes
    except (AttributeError, TypeError) as exc:
        log.debug("S3 reads cannot be aborted mid-read: %r", exc)
        return False
    return True
