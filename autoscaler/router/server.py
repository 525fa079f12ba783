"""Serve an ASGI app with uvicorn on a thread, on a socket bound up front (a port in use fails here, first)."""
from __future__ import annotations

import socket
import threading
import time

import uvicorn

__all__ = ["PortInUse", "bind_socket", "ThreadedServer"]


class PortInUse(OSError):
    """The configured port is taken; the message names host and port."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = a free one). Raises PortInUse naming it."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of such a socket; without it
    # (plain asyncio, no uvloop) a response written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"{host}:{port} cannot be bound ({exc.strerror or exc}); another process listens there "
                        f"(ss -ltnp 'sport = :{port}'), or choose another port (0 = any free port)") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


class ThreadedServer:
    """uvicorn on its own thread and event loop (uvloop + httptools when installed)."""

    def __init__(self, app, sock: socket.socket, name: str = "router"):
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_keep_alive=30, timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.ident is not None:   # started (a server opened but never started just closes)
            self._thread.join(timeout_s)
        self.sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
