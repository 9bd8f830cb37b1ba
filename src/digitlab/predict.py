"""The Predictor: a saved model plus preprocessing, used by the CLI, the API and the page.

Inputs are files, folders, list files or raw bytes; outputs follow one JSON contract:
``{"path", "digit", "confidence", "probabilities", "is_digit"}``, or ``{"path", "error"}``
for an input that cannot be read (the others still succeed).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import DigitlabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files as given; folders become their image files (sorted); list files their entries.

    ``-`` stands for one image on stdin. A path that does not exist is kept, so that it
    gets its own error entry in input order.
    """
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if p == "-":
            out.append(p)
        elif path.is_dir():
            out.extend(
                str(f) for f in sorted(path.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.suffix in (".txt", ".lst") and path.is_file():
            out.extend(str(f) for f in _list_file_entries(path))
        else:
            out.append(p)
    return out


def _list_file_entries(path: Path) -> list[Path]:
    entries = []
    for line in path.read_text().splitlines():
        parts = line.strip().split("\t") if path.suffix == ".lst" else line.strip().split()
        if not parts or not parts[0]:
            continue
        rel = parts[-1] if path.suffix == ".lst" else parts[0]
        entries.append(path.parent / rel)
    return entries


def read_input(path: str, stdin: io.BufferedReader | None = None) -> bytes:
    if path == "-":
        import sys

        return (stdin or sys.stdin.buffer).read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DigitlabError("no such file") from None
    except IsADirectoryError:
        raise DigitlabError("is a directory") from None
    except OSError as exc:
        raise DigitlabError(f"cannot read ({exc.strerror})") from None


def mnist_like(data: bytes) -> np.ndarray:
    """An MNIST-style image file (28x28, light ink on dark) as uint8 (28, 28)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            gray = img.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DigitlabError(f"not a readable image ({exc})") from None
    if gray.size != (28, 28):
        gray = gray.resize((28, 28), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


class Predictor:
    """A loaded model that turns images into the prediction contract."""

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu") -> None:
        from digitlab.artifact import load_artifact
        from digitlab.models.registry import Normalization

        self.model, self.meta = load_artifact(model_path, device)
        self.norm = Normalization(*self.meta["normalization"])
        self.device = device

    def probabilities(self, images_u8: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Softmax probabilities (N,10) for uint8 images (N,28,28)."""
        import torch

        from digitlab.evaluate import batched_logits

        x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(self.device)
        logits = batched_logits(self.model, x, self.norm.apply, batch_size)
        return torch.softmax(logits, 1).cpu().numpy()

    def predict_paths(self, paths: list[str], batch_size: int = 256) -> Iterator[dict[str, Any]]:
        """One result per input, in input order; unreadable inputs give an ``error`` entry."""
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images, ok, results = [], [], []
            for p in chunk:
                try:
                    images.append(mnist_like(read_input(p)))
                    ok.append(len(results))
                    results.append({"path": p})
                except DigitlabError as exc:
                    results.append({"path": p, "error": str(exc)})
            if images:
                probs = self.probabilities(np.stack(images))
                for row, i in zip(probs, ok, strict=True):
                    results[i].update(self._verdict(row))
            yield from results

    @staticmethod
    def _verdict(probs: np.ndarray) -> dict[str, Any]:
        digit = int(probs.argmax())
        return {
            "digit": digit,
            "confidence": float(probs[digit]),
            "probabilities": [round(float(p), 6) for p in probs],
        }
