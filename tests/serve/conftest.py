"""A model with its ONNX export, and a real `digitlab serve` on 127.0.0.1 shared by the tests.

The model is the bundled one when it is complete (model.json + model.onnx); otherwise a small
MLP is trained for a few seconds on real MNIST and exported, so the tests never depend on
the bundle being there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from digitlab.artifact import BUNDLED_MODEL
from testkit import write_recipe as small_recipe


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory, mnist) -> Path:
    """A model folder holding model.json, model.safetensors and a checked model.onnx."""
    if (BUNDLED_MODEL / "model.json").is_file() and (BUNDLED_MODEL / "model.onnx").is_file():
        return BUNDLED_MODEL
    return trained_model(tmp_path_factory.mktemp("serve-model"))


def trained_model(folder: Path) -> Path:
    from digitlab.export import export_onnx
    from digitlab.recipes import load_recipe
    from digitlab.train.loop import train

    small_recipe(
        folder / "recipe.toml",
        name="serve-test",
        model={"name": "mlp"},
        solver={"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01, "momentum": None},
        schedule={"policy": "onecycle", "pct_start": 0.25},
        train={"iters": 600, "val_interval": 600, "checkpoint_interval": 600, "log_interval": 100},
    )
    run = folder / "run"
    train(load_recipe(str(folder / "recipe.toml")), run, progress=False)
    export_onnx(run)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def get(self, path: str) -> tuple[int, bytes, dict]:
        return request(self.url + path)

    def log_text(self) -> str:
        return self.log.read_text()


def request(
    url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> tuple[int, bytes, dict]:
    """(status, body, headers) of one HTTP request, without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def start_server(
    args: list[str], log: Path, timeout: float = 60, cwd: Path | None = None
) -> Server:
    """`python -m digitlab serve ARGS` on a free port (run in ``cwd``), returned once /healthz
    answers 200."""
    port = free_port()
    with open(log, "wb") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "digitlab", "serve", "--port", str(port), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            cwd=cwd,
        )
    server = Server(f"http://127.0.0.1:{port}", port, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            if server.get("/healthz")[0] == 200:
                return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not ready in {timeout} s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(served_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server for the API tests: 1 MiB uploads, 2-second request deadline."""
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    args = ["--model", str(served_model), "--max-upload-mb", "1", "--timeout", "2"]
    srv = start_server(args, log)
    yield srv
    stop_server(srv)


# ----------------------------------------------------------------------------- images


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def paper_digit(digit28: np.ndarray, scale: int = 4) -> np.ndarray:
    """An MNIST digit as a user would send it: dark ink on white paper, enlarged."""
    big = Image.fromarray(digit28).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    return 255 - np.asarray(big)


def multipart(fields: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (name, filename, content, content type) parts."""
    boundary = "digitlab-test-boundary-7f3a"
    out = io.BytesIO()
    for name, filename, content, ctype in fields:
        out.write(f"--{boundary}\r\n".encode())
        out.write(
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        )
        out.write(f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_image(server: Server, path: str, image: bytes, field: str = "image"):
    """POST one image as multipart; returns (status, parsed JSON)."""
    body, ctype = multipart([(field, "digit.png", image, "image/png")])
    status, raw, _ = request(server.url + path, body, {"Content-Type": ctype})
    return status, json.loads(raw)


@pytest.fixture(scope="session")
def web() -> SimpleNamespace:
    """The helpers above, for the test modules (conftest cannot be imported directly)."""
    return SimpleNamespace(
        request=request,
        png=png,
        paper_digit=paper_digit,
        multipart=multipart,
        post_image=post_image,
        start_server=start_server,
        stop_server=stop_server,
        trained_model=trained_model,
    )
