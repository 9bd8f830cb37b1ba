"""The HTTP API of a real `digitlab serve` on 127.0.0.1: every endpoint, every error code,
slow clients and concurrent requests, on real MNIST digits."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

DIGIT_KEYS = {"digit", "confidence", "probabilities", "is_digit"}


@pytest.fixture(scope="module")
def paper(mnist, web):
    """The first 40 test digits as dark-on-white PNGs, with their labels."""
    images, labels = mnist["test"].images[:40], mnist["test"].labels[:40]
    return [web.png(web.paper_digit(a)) for a in images], [int(v) for v in labels]


def predict_json(server, web, payload: dict, path: str = "/v1/predict"):
    body = json.dumps(payload).encode()
    status, raw, _ = web.request(server.url + path, body, {"Content-Type": "application/json"})
    return status, json.loads(raw)


# ----------------------------------------------------------------------------- endpoints


def test_healthz_is_ready_on_onnx_without_importing_torch(server):
    status, body, _ = server.get("/healthz")
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "ok"
    assert health["backend"] == "onnx"
    assert health["torch_imported"] is False


def test_predict_reads_mnist_digits_sent_on_paper(server, web, paper):
    images, labels = paper
    results = [web.post_image(server, "/v1/predict", image) for image in images]
    assert all(status == 200 for status, _ in results)
    assert all(set(r) == DIGIT_KEYS for _, r in results)
    assert all(len(r["probabilities"]) == 10 for _, r in results)
    read = [r["digit"] for _, r in results]
    assert np.mean(np.array(read) == np.array(labels)) >= 0.85


def test_multipart_json_data_url_and_raw_body_give_the_same_answer(server, web, paper):
    image = paper[0][0]
    b64 = base64.b64encode(image).decode()
    _, from_form = web.post_image(server, "/v1/predict", image)
    _, from_json = predict_json(server, web, {"image": b64})
    _, from_url = predict_json(server, web, {"image": "data:image/png;base64," + b64})
    status, raw, _ = web.request(server.url + "/v1/predict", image, {"Content-Type": "image/png"})
    assert status == 200
    assert from_form == from_json == from_url == json.loads(raw)
    assert from_form["digit"] == paper[1][0]


def test_explain_returns_the_28x28_the_model_saw_as_png(server, web, paper):
    status, result = web.post_image(server, "/v1/predict?explain=1", paper[0][0])
    assert status == 200
    seen = Image.open(io.BytesIO(base64.b64decode(result["input"])))
    assert seen.format == "PNG"
    assert seen.size == (28, 28)
    ink = np.asarray(seen.convert("L"))
    assert ink.max() > 200 and ink[0].max() == 0  # light ink on black, an empty border


def test_number_mode_reads_two_mnist_digits_side_by_side(server, web, mnist):
    """Two test digits the server reads correctly alone, composed into one picture."""
    test = mnist["test"]
    chosen = []
    for want in (4, 2):
        for i in np.flatnonzero(test.labels == want)[:20]:
            status, r = web.post_image(
                server, "/v1/predict", web.png(web.paper_digit(test.images[i]))
            )
            if status == 200 and r["digit"] == want:
                chosen.append(web.paper_digit(test.images[i]))
                break
    assert len(chosen) == 2
    gap = np.full((112, 30), 255, np.uint8)
    margin = np.full((112, 20), 255, np.uint8)
    picture = np.hstack([margin, chosen[0], gap, chosen[1], margin])
    status, result = web.post_image(server, "/v1/predict?mode=number&explain=1", web.png(picture))
    assert status == 200
    assert result["number"] == "42"
    assert [d["digit"] for d in result["digits"]] == [4, 2]
    boxes = [d["box"] for d in result["digits"]]
    assert boxes[0][0] + boxes[0][2] <= boxes[1][0]  # left to right, not overlapping
    for d in result["digits"]:
        assert Image.open(io.BytesIO(base64.b64decode(d["input"]))).size == (28, 28)


def test_batch_answers_every_image_in_order_with_per_image_errors(server, web, paper):
    images, labels = paper
    fields = [("images", f"{i}.png", images[i], "image/png") for i in range(3)]
    fields.insert(1, ("images", "bad.png", b"not an image", "image/png"))
    body, ctype = web.multipart(fields)
    status, raw, _ = web.request(server.url + "/v1/predict/batch", body, {"Content-Type": ctype})
    results = json.loads(raw)["results"]
    assert status == 200
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert "error" in results[1] and "digit" not in results[1]
    single = [web.post_image(server, "/v1/predict", images[i])[1] for i in range(3)]
    answered = [results[0], results[2], results[3]]
    assert [{k: r[k] for k in DIGIT_KEYS} for r in answered] == single

    b64 = [base64.b64encode(images[i]).decode() for i in range(3)] + ["@@not base64@@"]
    status, body = predict_json(server, web, {"images": b64}, "/v1/predict/batch")
    assert status == 200
    assert [r.get("digit") for r in body["results"][:3]] == [r["digit"] for r in single]
    assert body["results"][3]["error"] == "image is not valid base64"


def test_models_describes_the_loaded_model_and_its_metrics(server):
    status, body, _ = server.get("/v1/models")
    (model,) = json.loads(body)["models"]
    assert status == 200
    assert model["backend"] == "onnx"
    assert model["classes"][:10] == list(range(10))
    assert 0.8 < model["metrics"]["test_accuracy"] <= 1
    assert {"architecture", "normalization", "rejection"} <= set(model)


def test_metrics_count_requests_latency_and_errors(server, web):
    def counter(text: str, status: str) -> float:
        labels = f'method="POST",route="/v1/predict",status="{status}"'
        pattern = r"digitlab_http_requests_total\{" + labels + r"\} (\S+)"
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    before = server.get("/metrics")[1].decode()
    web.request(server.url + "/v1/predict", b"nonsense", {"Content-Type": "image/png"})
    status, raw, headers = server.get("/metrics")
    text = raw.decode()
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert counter(text, "422") == counter(before, "422") + 1
    assert 'digitlab_http_errors_total{route="/v1/predict",status="422"}' in text
    assert 'digitlab_http_request_duration_seconds_bucket{le="0.05",route="/v1/predict"}' in text
    assert "digitlab_inference_duration_seconds_count" in text


def test_page_and_docs_are_served_without_any_outside_address(server):
    status, page, headers = server.get("/")
    html = page.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in html
    assets = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert assets and not [a for a in assets if "//" in a]
    for asset in ("/static/app.js", "/static/style.css"):
        assert server.get(asset)[0] == 200
    status, docs, _ = server.get("/docs")
    assert status == 200
    assert "cdn." not in docs.decode()
    for asset in re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", docs.decode()):
        assert server.get(asset)[0] == 200, asset
    spec = json.loads(server.get("/openapi.json")[1])
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz", "/metrics"} <= set(
        spec["paths"]
    )


# ----------------------------------------------------------------------------- errors


def tiny_png(web) -> bytes:
    return web.png(np.zeros((8, 8), np.uint8))


def huge_pixel_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")  # 36 Mpx in a few kB
    return buf.getvalue()


def truncated_png(web, paper) -> bytes:
    return paper[0][0][: len(paper[0][0]) // 2]


@pytest.mark.parametrize(
    "case,status",
    [
        ("36 megapixels", 413),
        ("text/plain", 415),
        ("no content type", 415),
        ("raw image to batch", 415),
        ("bad base64", 422),
        ("data URL without base64", 422),
        ("not JSON", 422),
        ("JSON nested too deep", 422),
        ("JSON without image", 422),
        ("not an image", 422),
        ("truncated PNG", 422),
        ("empty image", 422),
        ("multipart without image field", 422),
        ("unknown mode", 422),
    ],
)
def test_bad_requests_get_a_json_error_and_the_right_status(server, web, paper, case, status):
    cases = {
        "36 megapixels": ("/v1/predict", huge_pixel_png(), "image/png"),
        "text/plain": ("/v1/predict", b"seven", "text/plain"),
        "no content type": ("/v1/predict", tiny_png(web), ""),
        "raw image to batch": ("/v1/predict/batch", tiny_png(web), "image/png"),
        "bad base64": ("/v1/predict", b'{"image": "a$b"}', "application/json"),
        "data URL without base64": (
            "/v1/predict",
            b'{"image": "data:image/png,abc"}',
            "application/json",
        ),
        "not JSON": ("/v1/predict", b"{image:", "application/json"),
        "JSON nested too deep": (
            "/v1/predict",
            b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "application/json",
        ),
        "JSON without image": ("/v1/predict", b'{"picture": "AAAA"}', "application/json"),
        "not an image": ("/v1/predict", b"GIF89a but not really", "image/gif"),
        "truncated PNG": ("/v1/predict", truncated_png(web, paper), "image/png"),
        "empty image": ("/v1/predict", b'{"image": ""}', "application/json"),
        "multipart without image field": (
            "/v1/predict",
            *web.multipart([("file", "x.png", tiny_png(web), "image/png")]),
        ),
        "unknown mode": ("/v1/predict?mode=roman", tiny_png(web), "image/png"),
    }
    path, body, ctype = cases[case]
    got, raw, response_headers = web.request(server.url + path, body, {"Content-Type": ctype})
    assert got == status, raw
    assert response_headers["content-type"] == "application/json"
    error = json.loads(raw)
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]


def read_reply(s: socket.socket) -> tuple[str, str]:
    """Read one whole HTTP reply from a raw socket: the head arrives before the body, often
    in a separate segment, so one recv() is not enough."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head.decode(), body.decode()


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1048577\r\n\r\n"
        )
        head, body = read_reply(s)
    assert head.startswith("HTTP/1.1 413")
    assert json.loads(body) == {"error": "request body larger than 1,048,576 bytes"}


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    chunks = (b"\0" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
    conn.request(
        "POST",
        "/v1/predict",
        body=chunks,
        headers={"Content-Type": "image/png"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 413
    assert "larger than" in json.loads(response.read())["error"]
    conn.close()


def test_a_client_sending_its_body_too_slowly_gets_408(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\x89PNG"
        )
        head, body = read_reply(s)
    assert head.startswith("HTTP/1.1 408")
    assert "not received within 2 s" in json.loads(body)["error"]
    assert time.monotonic() - start < 6


def test_a_client_that_never_finishes_its_headers_is_disconnected(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        assert s.recv(4096) == b""  # closed by the server, not by our 10 s timeout
    assert time.monotonic() - start < 6


# ----------------------------------------------------------------------------- load, logs


def test_32_concurrent_requests_all_succeed_with_the_same_answer(server, web, paper):
    images = paper[0][:8] * 4

    def one(image: bytes):
        return web.post_image(server, "/v1/predict", image)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, images))
    assert [status for status, _ in results] == [200] * 32
    for i in range(8):
        assert len({json.dumps(results[i + 8 * k][1]) for k in range(4)}) == 1


def test_every_request_is_logged_on_one_line(server, web, paper):
    marker = f"trace{time.monotonic_ns()}"
    web.post_image(server, f"/v1/predict?tag={marker}", paper[0][0])
    web.request(server.url + f"/v1/predict?tag={marker}x", b"junk", {"Content-Type": "image/png"})
    time.sleep(0.2)
    lines = [line for line in server.log_text().splitlines() if marker in line]
    assert len(lines) == 2
    assert re.search(r'"POST /v1/predict\?tag=\w+" 200 [\d.]+ms \d+B', lines[0])
    assert f'tag={marker}x" 422' in lines[1]
