"""Real MNIST digits drawn the way people upload them, for the preprocessing tests."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


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
