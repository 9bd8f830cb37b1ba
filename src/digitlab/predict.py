"""The Predictor: a saved model plus preprocessing and rejection, used by the CLI, API and page.

Every input goes the same way: decode (any format), :func:`digitlab.preprocess.prepare` to an
MNIST-like 28x28, a backend (torch, or ONNX Runtime in the server) for logits, temperature-
scaled probabilities, and a verdict on whether the input is a digit at all. Outputs follow
one JSON contract (see :meth:`Predictor.predict_image`).

This module imports neither torch nor onnxruntime at load time: the backend does, when built.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.runtime import load_backend

if TYPE_CHECKING:
    from digitlab.numbers.lattice import Reading
    from digitlab.numbers.lines import LineReader

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
# number pieces are scored on these views, averaged: the piece and its four 1-px moves, the
# views of `digitlab ensemble --tta` (digitlab.ensemble.TTA_SHIFTS), as (dx, dy) px
PIECE_VIEWS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


# ----------------------------------------------------------------------------- inputs


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files as given; folders become their image files (sorted); list files their entries.

    ``-`` stands for one image on stdin. A path that does not exist is kept, so that it gets
    its own error entry in input order.
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DigitlabError(f"{path}: cannot read the list file ({exc})") from None
    entries = []
    for line in text.splitlines():
        parts = line.strip().split("\t") if path.suffix == ".lst" else line.strip().split()
        if not parts or not parts[0]:
            continue
        rel = parts[-1] if path.suffix == ".lst" else parts[0]
        entries.append(path.parent / rel)
    return entries


def read_input(path: str) -> bytes:
    """The bytes of one input (``-`` is stdin); a DigitlabError says why it cannot be read."""
    if path == "-":
        import sys

        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DigitlabError("no such file") from None
    except IsADirectoryError:
        raise DigitlabError("is a directory") from None
    except OSError as exc:
        raise DigitlabError(f"cannot read ({exc.strerror})") from None


def mnist_like(data: bytes) -> np.ndarray:
    """An image that is already MNIST-style (light ink on dark, centred) as uint8 (28, 28).

    For exported MNIST digits, where re-centring would only blur the comparison with
    ``digitlab evaluate``; anything not 28x28 is resized.
    """
    from PIL import Image

    from digitlab.preprocess import load_image

    gray = load_image(data).convert("L")
    if gray.size != (28, 28):
        gray = gray.resize((28, 28), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def png_base64(image28: np.ndarray) -> str:
    """A small PNG of a 28x28 uint8 image, base64-encoded (what the model saw)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image28).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- backends


# ----------------------------------------------------------------------------- predictor


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images (N,H,W) moved (dx, dy) px right and down, filling with 0 (the background)."""
    h, w = images.shape[1:]
    out = np.zeros_like(images)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def number_result(
    readings: list[Reading], threshold: float, explain: bool = False
) -> dict[str, Any]:
    """The ``--number`` contract for the digits found in one line."""
    if not readings:
        return {"number": None, "digits": []}
    confs = [r.confidence for r in readings]
    readable = float(np.mean(confs)) >= threshold
    digits = []
    for reading, conf in zip(readings, confs, strict=True):
        sure = conf >= threshold
        entry = {
            "digit": reading.digit if sure or readable else None,
            "confidence": round(conf, 6),
            "is_digit": sure,
            "box": list(reading.segment.box),
        }
        if explain:
            entry["input"] = png_base64(reading.segment.image)
        digits.append(entry)
    number = "".join(str(d["digit"]) for d in digits) if readable else None
    return {"number": number, "digits": digits}


class Predictor:
    """A loaded model that turns images into the prediction contract.

    ``model`` is a run or model folder, or None for the bundled default model. The model's
    ``model.json`` may carry a ``rejection`` block (temperature, threshold, method); models
    trained with an eleventh "not a digit" class use it for rejection. A folder holding a
    ``line.onnx`` (:mod:`digitlab.numbers.lines`) reads numbers with it too, unless ``line=False``.
    """

    def __init__(
        self, model: str | os.PathLike | None = None, backend: str = "torch", line: bool = True
    ) -> None:
        from digitlab.models.artifact import find_model, read_meta

        self.folder = find_model(model)
        self.meta = read_meta(self.folder)
        self.backend = load_backend(self.folder, backend)
        self.rejection = self.meta.rejection_or_default
        self.line: LineReader | None = None  # the folder's line recogniser, for numbers
        if line:
            from digitlab.numbers.lines import LINE_FILE, LineReader

            if (self.folder / LINE_FILE).is_file():
                self.line = LineReader(self.folder / LINE_FILE)

    # -- arrays -----------------------------------------------------------------------------

    def probabilities(self, images_u8: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (N,C) for MNIST-like uint8 images (N,28,28)."""
        if len(images_u8) == 0:
            return np.zeros((0, self.meta.num_classes), np.float32)
        z = self.backend.logits(np.ascontiguousarray(images_u8, dtype=np.uint8))
        return softmax(z / self.rejection.temperature)

    def piece_probabilities(self, images_u8: np.ndarray) -> np.ndarray:
        """Calibrated probabilities averaged over :data:`PIECE_VIEWS` of each image: a piece
        cut from a number sits a pixel off where MNIST would centre it more often than a
        whole upload does. (On 800 numbers made from ``val`` digits, the bundled model read
        95.5% exactly from single views and 95.9% from these five: 3 more, all touching.)"""
        n = len(images_u8)
        views = np.concatenate([shifted(images_u8, dx, dy) for dx, dy in PIECE_VIEWS])
        return self.probabilities(views).reshape(len(PIECE_VIEWS), n, -1).mean(axis=0)

    def verdicts(self, images_u8: np.ndarray, empty: np.ndarray | None = None) -> list[dict]:
        """``digit``, ``confidence``, ``probabilities`` (10) and ``is_digit`` per image."""
        probs = self.probabilities(images_u8)
        digit_probs = probs[:, :10]
        best = digit_probs.argmax(1)
        conf = digit_probs.max(1)
        accept = conf >= self.rejection.threshold
        if empty is not None:
            accept &= ~empty
        return [
            {
                "digit": int(best[i]) if accept[i] else None,
                "confidence": round(float(conf[i]), 6),
                "probabilities": [round(float(p), 6) for p in digit_probs[i]],
                "is_digit": bool(accept[i]),
            }
            for i in range(len(probs))
        ]

    # -- images -----------------------------------------------------------------------------

    def predict_image(
        self, data: bytes, *, number: bool = False, explain: bool = False
    ) -> dict[str, Any]:
        """One image (encoded bytes) to the contract; DigitlabError if it cannot be decoded.

        Single digit: ``{"digit", "confidence", "probabilities", "is_digit"}`` (+ ``input``,
        the base64 PNG of the 28x28 the model saw, with ``explain``).
        Number: ``{"number", "digits": [{"digit", "confidence", "is_digit", "box"}...]}``.
        """
        from digitlab.inputs import digit_input, line_input

        if number:
            return self._predict_number(line_input(data), explain)
        p = digit_input(data)
        result = self.verdicts(p.image[None], np.array([p.empty]))[0]
        if explain:
            result["input"] = png_base64(p.image)
        return result

    def _predict_number(self, img: Any, explain: bool) -> dict[str, Any]:
        """Segmentation by recognition (:mod:`digitlab.numbers`): the model scores candidate
        pieces and the most confident split into digits wins.

        The line is a number when its digits' mean calibrated confidence reaches the
        rejection threshold: one doubtful digit among confident ones is still read (its own
        ``is_digit`` says false), while ink that is mostly not digits is not a number. (With
        the bundled model, a number voided by any one doubtful digit read 93.5% of 800
        numbers made from ``val`` digits exactly, this rule 95.4%; of 500 non-digits, 29 and
        40 read as a number.)
        """
        from digitlab.numbers import read_number

        readings = read_number(img, self.piece_probabilities, self.line)
        return number_result(readings, self.rejection.threshold, explain)

    def predict_paths(
        self,
        paths: list[str],
        *,
        number: bool = False,
        show_input: str | None = None,
        preprocess: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """One result per input, in input order; unreadable inputs give ``{"path", "error"}``.

        Single digits are classified in batches; ``show_input`` saves each 28x28 the model saw;
        ``preprocess=False`` takes images as MNIST-style already.
        """
        from digitlab.inputs import digit_input

        batch = 256
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            results: list[dict[str, Any]] = []
            images, empties, slots = [], [], []
            for p in chunk:
                try:
                    data = read_input(p)
                    if number:
                        results.append({"path": p, **self.predict_image(data, number=True)})
                        continue
                    if preprocess:
                        prep = digit_input(data)
                        image, empty = prep.image, prep.empty
                    else:
                        image, empty = mnist_like(data), False
                except DigitlabError as exc:
                    results.append({"path": p, "error": str(exc)})
                    continue
                slots.append(len(results))
                results.append({"path": p})
                images.append(image)
                empties.append(empty)
                if show_input:
                    _save_input(show_input, p, start + len(results) - 1, image)
            if images:
                verdicts = self.verdicts(np.stack(images), np.array(empties))
                for slot, v in zip(slots, verdicts, strict=True):
                    results[slot].update(v)
            yield from results


def _save_input(folder: str, path: str, index: int, image28: np.ndarray) -> None:
    from PIL import Image

    from digitlab.fileio import atomic_write

    stem = "stdin" if path == "-" else Path(path).stem
    out = Path(folder) / f"{index:06d}_{stem}.png"
    with atomic_write(out) as fh:
        Image.fromarray(image28).save(fh, format="PNG")
