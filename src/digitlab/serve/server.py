"""Running the app under uvicorn: workers, logging, and a deadline and limits for headers.

uvicorn times out idle keep-alive connections but not a client that opens a connection and
then sends its headers a byte at a time; :class:`HeaderDeadlineProtocol` closes such a
connection once the deadline passes. Nor does uvicorn's httptools protocol limit the size of
the headers (httptools joins a header's pieces as they come: eight clients sending 256 MB
header lines grew the server by 310 MB and stalled /healthz for seconds), so the protocol
also answers 431 and closes once the request line and headers pass ``MAX_HEADER_BYTES`` or
``MAX_HEADERS`` fields. Bodies have their own deadline and limit in the Guard middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitlab.errors import DigitlabError
from digitlab.serve.app import SETTINGS_ENV, Settings
from digitlab.serve.collect import SampleStore
from digitlab.serve.middleware import log

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; browsers send 1-2 kB, nginx allows 32 kB
MAX_HEADERS = 100  # header fields in one request (Node's and Go's limits are of this order)


class HeadersTooLarge(Exception):
    """Raised from the parser's callback to stop parsing a request with too many headers."""


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers do not arrive in time
    and answering 431 to headers over ``MAX_HEADER_BYTES`` bytes or ``MAX_HEADERS`` fields."""

    _deadline: asyncio.TimerHandle | None = None
    _awaiting_headers = True  # the bytes fed now belong to a request line or headers
    _header_bytes = 0
    _header_count = 0
    _refusal: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed the parser at most ``MAX_HEADER_BYTES`` of request line and headers; the
        parser never holds more, whatever the client sends."""
        while data and self._refusal is None and not self.transport.is_closing():
            if not self._awaiting_headers:
                super().data_received(data)
                return
            room = MAX_HEADER_BYTES - self._header_bytes
            if room <= 0:
                self._refuse(f"request headers larger than {MAX_HEADER_BYTES:,} bytes")
                return
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            super().data_received(piece)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._deadline is None:
            self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._refusal = f"more than {MAX_HEADERS} request header fields"
            raise HeadersTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._awaiting_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers, self._header_bytes = True, 0  # the next request's, if any

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:  # a malformed request, not one of ours
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    def _refuse(self, reason: str) -> None:
        """431 and close: the client may still be sending, so nothing more is read."""
        self._refusal = reason
        self._disarm()
        log.warning("%s: 431 %s", self.client[0] if self.client else "-", reason)
        body = json.dumps({"error": reason}).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()

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
    if settings.collect_dir is not None:  # a folder that cannot be written fails here, once
        SampleStore(settings.collect_dir, settings.collect_max, settings.max_pixels)
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
