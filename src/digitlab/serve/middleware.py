"""The guard in front of every request: body limits, a read deadline, metrics and a log line.

A plain ASGI middleware (no per-request task or thread of its own). It refuses a body larger
than the limit before reading it when Content-Length says so (413), counts the bytes of any
other body as they arrive (413), and gives a client that sends its body too slowly a 408 at
the deadline: a slow client costs one idle connection, never a worker thread. A client that
hangs up before its body is in is counted as 499 (nginx's "client closed request") and logged
on its one access line: it is not a server error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("digitlab.serve")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CLIENT_CLOSED = 499  # the client went away before sending its whole request


class RequestRejected(Exception):
    """Raised from inside ``receive``: the request's body breaks a limit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Metrics:
    """The Prometheus series of one process (shared by all workers in multiprocess mode)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series only double the output

        self.requests = Counter(
            "digitlab_http_requests", "HTTP requests answered", ["method", "route", "status"]
        )
        self.errors = Counter(
            "digitlab_http_errors", "HTTP requests answered with status >= 400", ["route", "status"]
        )
        self.latency = Histogram(
            "digitlab_http_request_duration_seconds",
            "Time from request start to the end of the response",
            ["route"],
            buckets=LATENCY_BUCKETS,
        )
        self.images = Counter("digitlab_images", "Images predicted", ["mode"])
        self.inference = Histogram(
            "digitlab_inference_duration_seconds",
            "Time in the predictor (decode, preprocessing, model) per image",
            ["mode"],
            buckets=LATENCY_BUCKETS,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    @staticmethod
    def exposition() -> tuple[bytes, str]:
        """The text format, over all worker processes when there are several."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            REGISTRY,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        registry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """The one Metrics object of this process (prometheus-client registers names globally)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def json_error(status: int, message: str) -> tuple[Message, Message]:
    body = json.dumps({"error": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class Guard:
    """Wraps the app: limits, deadline, metrics and one log line per request."""

    def __init__(self, app: ASGIApp, *, max_body: int, body_timeout: float) -> None:
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.metrics = process_metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "bytes": 0, "started": False, "recorded": False, "gone": False}

        async def send_and_note(message: Message) -> None:
            if state["gone"]:  # nobody to answer; the app's error reply is not a 500 of ours
                return
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # counted before the client can see the answer, so a /metrics scrape
                    # right after a response always includes it
                    self._record(scope, state, time.perf_counter() - start)
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body:
                raise RequestRejected(413, self._too_large())
            await self.app(scope, self._limited(receive, start, state), send_and_note)
        except RequestRejected as exc:
            if not state["started"]:
                for message in json_error(exc.status, exc.message):
                    await send_and_note(message)
        except Exception:
            if not state["gone"]:
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not state["started"]:
                for message in json_error(500, "internal server error"):
                    await send_and_note(message)
        finally:
            if state["gone"]:
                state["status"] = CLIENT_CLOSED
            if not state["recorded"]:
                self._record(scope, state, time.perf_counter() - start)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body:,} bytes"

    def _limited(self, receive: Receive, start: float, state: dict) -> Receive:
        """``receive`` that enforces the body size and the deadline until the body is in, and
        notes in ``state["gone"]`` a client that disconnects before that."""
        received = 0
        done = False
        deadline = start + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - time.perf_counter())
            except TimeoutError:
                raise RequestRejected(
                    408, f"request body not received within {self.body_timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise RequestRejected(413, self._too_large())
                done = not message.get("more_body", False)
            else:
                done = True
                state["gone"] = message["type"] == "http.disconnect"
            return message

        return limited_receive

    def _record(self, scope: Scope, state: dict, seconds: float) -> None:
        state["recorded"] = True
        route = getattr(scope.get("route"), "path", "other")
        status = state["status"]
        self.metrics.observe(scope["method"], route, status, seconds)
        client = scope.get("client") or ("-", 0)
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + ("?" + query if query else "")
        log.info(
            '%s "%s %s" %d %.1fms %dB',
            client[0],
            scope["method"],
            target,
            status,
            seconds * 1e3,
            state["bytes"],
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise RequestRejected(400, "invalid Content-Length header") from None
    return None
