"""Hypothesis against a real `digitlab serve` on 127.0.0.1: any method, path, query, content
type and body (images of every mode and format, damaged or not, JSON of any shape, multipart
of any fields, raw bytes on the socket) gets a 4xx or 2xx in the JSON contract, within a
timeout, and the server logs no traceback. Seeded (derandomized): a failure reproduces."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
import urllib.parse
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

HTTP_EXAMPLES = 200
RAW_EXAMPLES = 60
TIMEOUT = 15  # seconds for any one answer: a hang fails the example

# (format, mode) pairs Pillow can write; LAB, YCbCr and float TIFFs are the odd ones
WRITABLE = [
    ("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "1"),
    ("PNG", "I;16"), ("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("BMP", "RGB"),
    ("GIF", "P"), ("TIFF", "L"), ("TIFF", "F"), ("TIFF", "I;16"), ("TIFF", "CMYK"),
    ("TIFF", "LAB"), ("TIFF", "YCbCr"), ("WEBP", "RGB"), ("WEBP", "RGBA"),
]  # fmt: skip


@st.composite
def images(draw) -> bytes:
    """An encoded image of any writable mode: noise, flat, a stroke, or a float image with
    NaN and infinities; sometimes truncated or with bytes flipped."""
    fmt, mode = draw(st.sampled_from(WRITABLE))
    w, h = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "flat", "stroke"]))
    gray = np.full((h, w), 240, np.uint8)
    if kind == "noise":
        gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    elif kind == "stroke":
        gray[h // 4 : 3 * h // 4 + 1, w // 2 : w // 2 + max(1, w // 8)] = 20
    if mode == "F":
        arr = gray.astype(np.float32) / 255
        for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3)):
            arr[rng.integers(h), rng.integers(w)] = value
        img = Image.fromarray(arr, "F")
    elif mode == "I;16":
        bits = draw(st.sampled_from([10, 12, 16]))
        img = Image.fromarray((gray.astype(np.uint16) * (2**bits - 1) // 255).astype(np.uint16))
    else:
        img = Image.fromarray(gray, "L").convert("RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none"] * 4 + ["truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


blobs = st.one_of(images(), images(), images(), st.binary(max_size=2048))  # mostly images
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
base64_texts = st.one_of(
    blobs.map(b64),
    blobs.map(lambda d: "data:image/png;base64," + b64(d)),
    st.text(max_size=64),
)


@st.composite
def bodies(draw, many: bool) -> tuple[str, bytes]:
    """(Content-Type, body) of every kind the API reads, and some it does not; most of them
    well-formed for a batch (``many``) or a single image."""
    kinds = ["json", "json", "multipart", "multipart", "json-any", "junk"]
    kind = draw(st.sampled_from(kinds + ["raw"] * (1 if many else 3)))
    if kind == "raw":
        ctype = draw(st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"]))
        return ctype, draw(blobs)
    if kind == "json":
        value = draw(st.lists(base64_texts, max_size=4) if many else base64_texts)
        key = draw(st.sampled_from(["images" if many else "image"] * 4 + ["image", "picture"]))
        return "application/json", json.dumps({key: value}).encode()
    if kind == "json-any":
        return "application/json", json.dumps(draw(json_values)).encode()
    if kind == "multipart":
        boundary = "fz" + draw(st.text("abcdefghij0123456789", min_size=1, max_size=20))
        out = io.BytesIO()
        for _ in range(draw(st.integers(0, 4))):
            name = draw(st.sampled_from(["images" if many else "image"] * 4 + ["file", "x\u00e9"]))
            out.write(f"--{boundary}\r\n".encode())
            if draw(st.booleans()):  # a file part
                out.write(
                    f'Content-Disposition: form-data; name="{name}"; filename="a.png"\r\n'.encode()
                )
                out.write(b"Content-Type: image/png\r\n\r\n" + draw(blobs) + b"\r\n")
            else:  # a text part: base64 in a form field
                out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
                out.write(draw(base64_texts).encode() + b"\r\n")
        if draw(st.booleans()):
            out.write(f"--{boundary}--\r\n".encode())
        return f"multipart/form-data; boundary={boundary}", out.getvalue()
    header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
    return draw(header_text), draw(st.binary(max_size=512))


paths = st.one_of(
    st.sampled_from(
        [
            "/v1/predict",
            "/v1/predict/batch",
            "/healthz",
            "/metrics",
            "/v1/models",
            "/",
            "/docs",
            "/openapi.json",
            "/static/app.js",
            "/static/../app.py",
            "/v1/predict/",
        ]
    ),  # fmt: skip
    st.text(max_size=30).map(lambda t: "/" + urllib.parse.quote(t)),
)
queries = st.dictionaries(
    st.sampled_from(["mode", "explain", "tag", ""]),
    st.one_of(st.sampled_from(["digit", "number", "1", "0", "true", "roman"]), st.text(max_size=8)),
    max_size=3,
)
methods = st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


@st.composite
def targets(draw) -> tuple[str, str, dict]:
    """(method, path, query): four in five aim at the model, the rest anywhere."""
    if draw(st.integers(0, 4)) > 0:
        path = draw(st.sampled_from(["/v1/predict", "/v1/predict/batch"]))
        query = {
            "mode": draw(st.sampled_from(["digit", "number", "number", "roman", None])),
            "explain": draw(st.sampled_from(["0", "1", "true", "maybe", None, None])),
        }
        return "POST", path, {k: v for k, v in query.items() if v is not None}
    return draw(methods), draw(paths), draw(queries)


def metrics_5xx(server) -> dict[str, float]:
    text = server.get("/metrics")[1].decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"(digitlab_http_requests_total\{[^}]*status=\"5\d\d\"\}) (\S+)", text)
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fuzzed_requests_never_get_a_5xx_hang_or_traceback(server):
    log_start = len(server.log_text())
    before = metrics_5xx(server)
    statuses: Counter[int] = Counter()
    answered: Counter[str] = Counter()  # predictions that came back with a digit or a number

    @settings(
        max_examples=HTTP_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(draws=st.data())
    def one_request(draws):
        method, path, query = draws.draw(targets())
        ctype, data = draws.draw(bodies(many=path.startswith("/v1/predict/batch")))
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            headers = {"Content-Type": ctype} if ctype else {}
            conn.request(method, url, body=data if method != "GET" else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        statuses[response.status] += 1
        assert response.status < 500, (response.status, raw[:300])
        if response.status >= 400 and method != "HEAD":
            error = json.loads(raw)
            assert list(error) == ["error"] and isinstance(error["error"], str), raw[:300]
        if response.status == 200 and path.startswith("/v1/predict") and method == "POST":
            answered.update(_holds_the_contract(json.loads(raw), path))

    one_request()
    print(f"HTTP fuzz: {statuses.total()} requests, statuses {dict(statuses)}, {dict(answered)}")
    assert statuses.total() >= HTTP_EXAMPLES
    assert answered["digit"] >= 20 and answered["number"] >= 5  # the fuzz reaches the model
    assert metrics_5xx(server) == before
    log = server.log_text()[log_start:]
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]


def _holds_the_contract(result: dict, path: str) -> list[str]:
    """The kinds of answer in one 200 reply ("digit", "number", "error"), checked."""
    entries = result["results"] if path.startswith("/v1/predict/batch") else [result]
    kinds = []
    for r in entries:
        if "error" in r:
            assert "internal error" not in r["error"], r
            kinds.append("error")
        elif "number" in r:
            for d in r["digits"]:
                assert 0 <= d["confidence"] <= 1 and min(d["box"]) >= 0
            kinds.append("number")
        else:
            assert 0 <= r["confidence"] <= 1 and len(r["probabilities"]) == 10
            kinds.append("digit")
    return kinds


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzzed_raw_bytes_on_the_socket_never_get_a_5xx_or_a_hang(server):
    """Whatever bytes arrive (a broken request line, headers without a colon, a bad chunked
    body), the answer is a 4xx or a closed connection, within the timeout."""
    log_start = len(server.log_text())
    line = st.sampled_from(
        [b"GET / HTTP/1.1\r\n", b"POST /v1/predict HTTP/1.1\r\n", b"", b"GARBAGE\r\n"]
    )
    extra = st.sampled_from(
        [
            b"",
            b"Transfer-Encoding: chunked\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: x\r\n",
        ]
    )

    @settings(max_examples=RAW_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(first=line, more=extra, junk=st.binary(max_size=300))
    def one_exchange(first, more, junk):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
            s.sendall(first + b"Host: x\r\n" + more + junk + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)  # nothing more is coming: the server must answer or close
            reply = b""
            try:
                while chunk := s.recv(65536):
                    reply += chunk
            except ConnectionResetError:
                pass
        assert not re.match(rb"HTTP/1\.[01] 5", reply), reply[:300]

    one_exchange()
    log = server.log_text()[log_start:]
    assert "Traceback" not in log, log[-3000:]
