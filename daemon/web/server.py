"""Running the app: uvicorn on a socket bound here (so a busy port is a clear error and port 0 tells its number),
in the foreground for `dupwatch serve`, or in a thread beside the daemon for `watch --serve`."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from dupwatch.daemon.config import Config
from dupwatch.daemon.web.app import Writer, create_app
from dupwatch.daemon.web.guard import Access
from dupwatch.daemon.web.search import Searcher
from dupwatch.hashing.embedder import Embedder

log = logging.getLogger(__name__)


class ServeError(Exception):
    """The server cannot start (the address is taken, not ours to bind)."""


@dataclass
class Server:
    access: Access
    url: str  # where to open it (with ?token= when there is one)
    searcher: Searcher | None
    _server: uvicorn.Server
    _sock: socket.socket
    _thread: threading.Thread | None = None

    def run(self) -> None:
        """In the foreground until SIGINT/SIGTERM: uvicorn shuts down gracefully, then raises the signal again
        against the handlers it found; quiet ones here make that a clean exit 0, not a death by signal."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._close()

    def start(self) -> None:
        """In a thread (beside the daemon): uvicorn takes no signals there, the daemon owns them."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.searcher is not None:
            self.searcher.close()
        self._sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(
    cfg: Config,
    token: str | None,
    make_embedder: Callable[[], Embedder] | None,
    inside_daemon: bool = False,
) -> Server:
    """The server for `cfg.host`/`cfg.port` (a token is made for a non-loopback bind without one); search needs
    `make_embedder` (the CNN is loaded in the background at once, so the first search is quick)."""
    access = Access.for_bind(cfg.host, token)
    searcher = None if make_embedder is None else Searcher(cfg, make_embedder)
    app = create_app(cfg, searcher, Writer(cfg, take_lock=not inside_daemon), access)
    sock = _bind(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, access_log=False, lifespan="off")
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    url = f"http://{shown}:{port}/review" + (f"?token={access.token}" if access.token else "")
    if searcher is not None:
        searcher.warm_up()
    return Server(access, url, searcher, uvicorn.Server(config), sock)
