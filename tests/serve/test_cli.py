"""`digitlab serve` as a user starts it: the backends, several workers, and the mistakes
(no model.onnx, a busy port) that must end in one line and exit code 2."""

from __future__ import annotations

import json
import re
import shutil

import pytest


@pytest.fixture(scope="module")
def model_without_onnx(served_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("no-onnx") / "model"
    shutil.copytree(served_model, folder, ignore=shutil.ignore_patterns("*.onnx", "checkpoints"))
    return folder


def test_serving_without_model_onnx_says_how_to_export_it(model_without_onnx, cli):
    done = cli("serve", "--model", str(model_without_onnx), "--port", "0", timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 2
    assert err.count("\n") == 1
    assert f"digitlab export {model_without_onnx} --format onnx" in err


@pytest.mark.slow
def test_torch_backend_serves_a_model_without_onnx(model_without_onnx, web, mnist, tmp_path):
    server = web.start_server(
        ["--model", str(model_without_onnx), "--backend", "torch"], tmp_path / "log"
    )
    try:
        health = json.loads(server.get("/healthz")[1])
        assert health["backend"] == "torch" and health["torch_imported"] is True
        status, result = web.post_image(
            server, "/v1/predict", web.png(web.paper_digit(mnist["test"].images[0]))
        )
        assert status == 200 and result["digit"] == int(mnist["test"].labels[0])
    finally:
        web.stop_server(server)


@pytest.mark.slow
def test_two_workers_answer_and_share_one_metrics_page(served_model, web, mnist, tmp_path):
    server = web.start_server(["--model", str(served_model), "--workers", "2"], tmp_path / "log")
    try:
        image = web.png(web.paper_digit(mnist["test"].images[1]))
        for _ in range(12):
            assert web.post_image(server, "/v1/predict", image)[0] == 200
        text = server.get("/metrics")[1].decode()
        found = re.search(
            r'digitlab_http_requests_total\{method="POST",route="/v1/predict",status="200"\} (\S+)',
            text,
        )
        assert found and float(found.group(1)) == 12  # summed over both workers
    finally:
        web.stop_server(server)


def test_a_busy_port_fails_in_one_line(served_model, server, cli):
    done = cli("serve", "--model", str(served_model), "--port", str(server.port), timeout=60)
    assert done.returncode == 2
    assert "pass another --port" in done.stderr.decode()
    assert done.stderr.decode().count("\n") == 1
