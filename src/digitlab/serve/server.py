"""Running the app under uvicorn: workers, logging and a deadline for request headers.

uvicorn times out idle keep-alive connections but not a client that opens a connection and
then sends its headers a byte at a time; :class:`HeaderDeadlineProtocol` closes such a
connection once the deadline passes. Bodies have their own deadline in the Guard middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitlab.errors import DigitlabError
from digitlab.serve.app import SETTINGS_ENV, Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers do not arrive in time."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        seconds = getattr(self.config, "digitlab_header_timeout", 10.0)
        self._deadline = self.loop.call_later(seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def log_config(level: str) -> dict[str, Any]:
    """One handler on stderr for uvicorn and for our one-line-per-request access log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "digitlab.serve": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DigitlabError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port"
            ) from None


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Load the model (failing fast on a bad one), then serve until interrupted."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from digitlab.predict import Predictor

    check_port_free(host, port)
    predictor = Predictor(settings.model, backend=settings.backend)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": HeaderDeadlineProtocol,
        "access_log": False,  # the Guard logs one line per request, with its latency
        "log_config": log_config(log_level),
        "timeout_keep_alive": 5,
        "limit_concurrency": 1000,  # beyond this many open connections: 503, not a crash
        "server_header": False,
    }
    if workers == 1:
        from digitlab.serve.app import create_app

        config = uvicorn.Config(create_app(predictor, settings), **options)
        config.digitlab_header_timeout = settings.request_timeout  # read by the protocol
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run()
        return
    # Each worker loads the model itself; all write their metrics into one folder.
    del predictor
    os.environ[SETTINGS_ENV] = settings.to_env()
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="digitlab-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = uvicorn.Config(
        "digitlab.serve.app:app_from_env", factory=True, workers=workers, **options
    )
    config.digitlab_header_timeout = settings.request_timeout
    try:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
