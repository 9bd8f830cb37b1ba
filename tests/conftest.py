"""Shared fixtures: the real MNIST, fetched once per session through the real downloader
from the shared mirror (``$DIGITLAB_MNIST_MIRROR`` or ``../shared/data/mnist``)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def _mirror() -> str:
    env = os.environ.get("DIGITLAB_MNIST_MIRROR")
    if env:
        return env
    if (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        return str(SHARED_MNIST)
    pytest.exit("no MNIST mirror: set DIGITLAB_MNIST_MIRROR or put ../shared/data/mnist beside")


@pytest.fixture(scope="session")
def mnist_mirror() -> str:
    """A local mirror folder holding the four canonical files."""
    return _mirror()


@pytest.fixture(scope="session", autouse=True)
def digitlab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and every CLI subprocess) uses a private cache filled from the mirror."""
    home = tmp_path_factory.mktemp("digitlab-home")
    os.environ["DIGITLAB_HOME"] = str(home)
    os.environ["DIGITLAB_MNIST_MIRROR"] = _mirror()
    return home


@pytest.fixture(scope="session")
def mnist(digitlab_home: Path) -> dict:
    """The original train/test :class:`~digitlab.data.dataset.Dataset` pair."""
    from digitlab.data.dataset import load_mnist

    return load_mnist()


def run_cli(
    *args: str, input: bytes | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``digitlab ARGS`` in a real subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "digitlab", *args],
        capture_output=True,
        input=input,
        timeout=timeout,
        env=os.environ.copy(),
    )


@pytest.fixture
def cli():
    return run_cli


# ------------------------------------------------- real MNIST digits drawn as people upload them


def enlarge(digit: np.ndarray, height: int) -> np.ndarray:
    """A 28×28 uint8 digit cropped to its ink and smoothly enlarged: float ink in [0, 1]."""
    a = digit.astype(np.float32) / 255
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    width = max(1, round(a.shape[1] * height / a.shape[0]))
    img = Image.fromarray(a, "F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), 0, 1)


def place(ink: np.ndarray, size: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """``ink`` pasted on an empty (h, w) canvas with its top-left corner at (y, x)."""
    canvas = np.zeros(size, np.float32)
    y, x = at
    canvas[y : y + ink.shape[0], x : x + ink.shape[1]] = ink
    return canvas


def on_paper(ink: np.ndarray, paper: float = 0.95, pen: float = 0.1) -> np.ndarray:
    """Dark ink on light paper as an 8-bit grey picture."""
    return np.rint((paper * (1 - ink) + pen * ink) * 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of the strokes (pixels above half intensity) of two 28×28 images, at the best
    relative shift of at most one pixel: MNIST centres by a whole-pixel shift, so a centre of
    mass near a half pixel may round either way."""
    a, b = a > 127, b > 127
    best = 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            s = np.roll(b, (dy, dx), axis=(0, 1))
            best = max(best, float((a & s).sum() / max(1, (a | s).sum())))
    return best


@pytest.fixture(scope="session")
def test_digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist["test"].images, mnist["test"].labels


@pytest.fixture(scope="session")
def digit_of(test_digits):
    """The first MNIST test digit with a given label."""
    images, labels = test_digits

    def pick(label: int, nth: int = 0) -> np.ndarray:
        return images[np.flatnonzero(labels == label)[nth]]

    return pick


@pytest.fixture(scope="session")
def h() -> SimpleNamespace:
    """The drawing helpers above, for test modules (conftest cannot be imported directly)."""
    return SimpleNamespace(enlarge=enlarge, place=place, on_paper=on_paper, encode=encode, iou=iou)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that runs the CLI as a process pays a torch import (2-3 s) per call: it belongs
    to the slow tier, so the fast tier (``make test-fast``) stays under two minutes."""
    for item in items:
        if "cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
