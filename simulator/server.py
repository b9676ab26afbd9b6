"""A small threaded HTTP server for the simulator, for tests, the demo and ``python -m simulator``.

``wsgiref`` is enough: the simulator answers a handful of local clients. Threads let a slow
answer (the ``latency`` fault, a big upload) not block the others; daemon threads let the
process exit even if a client holds a connection open.
"""

from __future__ import annotations

import logging
import threading
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from simulator.app import SOCKET_KEY, SimulatorApp
from simulator.engine import Simulator

logger = logging.getLogger("simulator")


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the ``simulator`` logger at DEBUG, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def get_environ(self) -> dict[str, Any]:
        # The socket, for the faults that drop the connection (``reset``, ``cut_downloads``).
        environ = super().get_environ()
        environ[SOCKET_KEY] = self.connection
        return environ


class SimulatorServer:
    """Serve a :class:`Simulator` on ``host:port`` (port 0 picks a free one) in a thread.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``sim`` is the live
    simulator, so in-process tests can move its clock or set faults directly. Options other
    than host and port create the simulator when none is given (``speed``, ``api_key``,
    ``dialect``...).
    """

    def __init__(
        self,
        sim: Simulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> None:
        self._owns_sim = sim is None
        self.sim = sim if sim is not None else Simulator(**options)
        self._httpd = make_server(
            host,
            port,
            SimulatorApp(self.sim),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL a client of the simulator's dialect uses: ``.../v1`` (OpenAI, to use as
        ``OPENAI_BASE_URL``), ``.../openai/v1`` (Azure's v1 API), or the bare resource endpoint
        (Azure's dated API, whose clients append ``/openai/batches?api-version=...``)."""
        return self.root_url + self.sim.profile.base_path

    def start(self) -> SimulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"simulator-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket, and close the simulator if this server made it."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        if self._owns_sim:
            self.sim.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
