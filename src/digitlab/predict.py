"""The Predictor: a saved model plus preprocessing and rejection, used by the CLI, API and page.

Every input goes the same way: decode (any format), :func:`digitlab.preprocess.prepare` to an
MNIST-like 28x28, a backend (ONNX Runtime where the folder has an up-to-date model.onnx, as
the bundled model does, else torch: :func:`digitlab.runtime.load_backend`) for logits, temperature-
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

from digitlab.data.folders import IMAGE_SUFFIXES, read_list_file
from digitlab.errors import DigitlabError
from digitlab.runtime import load_backend
from digitlab.system import FORKS

if TYPE_CHECKING:
    from digitlab.numbers.lattice import Reading
    from digitlab.numbers.lines import LineReader

# number pieces are scored on these views, averaged: the piece and its four 1-px moves, the
# views of `digitlab ensemble --tta` (digitlab.ensemble.TTA_SHIFTS), as (dx, dy) px
PIECE_VIEWS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


# ----------------------------------------------------------------------------- inputs


class Unreadable(str):
    """An input that cannot even be listed (an undecodable list file, an unreadable folder):
    the path, carrying the ``error`` its result entry reports in input order."""

    error: str

    def __new__(cls, path: str, error: str) -> Unreadable:
        self = super().__new__(cls, path)
        self.error = error
        return self

    def __reduce__(self) -> tuple[type[Unreadable], tuple[str, str]]:
        return Unreadable, (str(self), self.error)  # to a worker process of predict_paths


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files as given; folders become their image files (sorted); list files their entries.

    ``-`` stands for one image on stdin. A path that does not exist is kept, so that it gets
    its own error entry in input order; a folder or list file that cannot be read becomes one
    :class:`Unreadable` entry. Nothing here opens a FIFO or a device: only regular files are
    read, by :func:`digitlab.fileio.read_regular`.
    """
    out: list[str] = []
    for p in paths:
        path = Path(p)
        try:
            if p == "-":
                out.append(p)
            elif path.is_dir():
                out.extend(str(f) for f in sorted(path.rglob("*")) if _is_image_name(f))
            elif path.suffix in (".txt", ".lst") and path.is_file():
                out.extend(str(e.path) for e in read_list_file(path, labelled=False))
            else:
                out.append(p)
        except DigitlabError as exc:
            out.append(Unreadable(p, getattr(exc, "reason", str(exc))))
        except OSError as exc:
            out.append(Unreadable(p, f"cannot list the folder ({exc.strerror})"))
    return out


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_input(path: str) -> bytes:
    """The bytes of one input (``-`` is stdin), a regular file of at most ``MAX_IMAGE_BYTES``;
    a DigitlabError says why it cannot be read (the path is in the result entry already)."""
    from digitlab.fileio import UnreadableFile, read_bounded, read_regular
    from digitlab.preprocess import MAX_IMAGE_BYTES

    if isinstance(path, Unreadable):
        raise DigitlabError(path.error)
    try:
        if path == "-":
            import sys

            return read_bounded(sys.stdin.buffer, MAX_IMAGE_BYTES, name="-", what="image")
        return read_regular(path, MAX_IMAGE_BYTES, what="image")
    except UnreadableFile as exc:
        raise DigitlabError(exc.reason) from None


def mnist_like(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """An image that is already MNIST-style (light ink on dark, centred) as uint8 (28, 28).

    For exported MNIST digits, where re-centring would only blur the comparison with
    ``digitlab evaluate``; anything not 28x28 is resized.
    """
    from PIL import Image

    from digitlab.preprocess import MAX_PIXELS, gray8, load_image

    gray = Image.fromarray(gray8(load_image(data, max_pixels=max_pixels or MAX_PIXELS)))
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
    ``backend`` is ``auto`` (ONNX Runtime where it can), ``onnx`` or ``torch``.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        backend: str = "auto",
        line: bool = True,
        max_pixels: int | None = None,
    ) -> None:
        from digitlab.artifact import find_model, read_meta
        from digitlab.preprocess import MAX_PIXELS

        self.max_pixels = max_pixels or MAX_PIXELS  # larger images: ImageTooLarge, on any path
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
        """Calibrated probabilities of pieces cut from a number. Without a line model they are
        averaged over :data:`PIECE_VIEWS` of each piece: a piece sits a pixel off where MNIST
        would centre it more often than a whole upload does. With one, its re-ranking does
        that job: one view reads as many numbers, in half the time (docs/numbers.md)."""
        if self.line is not None:
            return self.probabilities(images_u8)
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
        # Python floats and ints once per batch: numpy's scalars cost more than the rounding
        rows = zip(best.tolist(), conf.tolist(), digit_probs.tolist(), accept.tolist(), strict=True)
        return [
            {
                "digit": digit if ok else None,
                "confidence": round(c, 6),
                "probabilities": [round(p, 6) for p in ps],
                "is_digit": ok,
            }
            for digit, c, ps, ok in rows
        ]

    # -- images -----------------------------------------------------------------------------

    def predict_image(
        self, data: bytes, *, number: bool = False, explain: bool = False
    ) -> dict[str, Any]:
        """One image (encoded bytes) to the contract; DigitlabError if it cannot be decoded
        (:class:`~digitlab.preprocess.ImageTooLarge` over ``max_pixels``).

        Single digit: ``{"digit", "confidence", "probabilities", "is_digit"}`` (+ ``input``,
        the base64 PNG of the 28x28 the model saw, with ``explain``).
        Number: ``{"number", "digits": [{"digit", "confidence", "is_digit", "box"}...]}``.
        """
        from digitlab.inputs import digit_input, line_input

        if number:
            return self._predict_number(line_input(data, self.max_pixels), explain)
        p = digit_input(data, self.max_pixels)
        result = self.verdicts(p.image[None], np.array([p.empty]))[0]
        if explain:
            result["input"] = png_base64(p.image)
        return result

    def _predict_number(self, img: Any, explain: bool) -> dict[str, Any]:
        """Segmentation by recognition (:mod:`digitlab.numbers`): the model scores candidate
        pieces and the most confident split into digits wins.

        The line is a number when its digits' mean calibrated confidence reaches the
        rejection threshold: one doubtful digit among confident ones is still read (its own
        ``is_digit`` says false), while ink that is mostly not digits is not a number
        (the rule against its alternative: docs/numbers.md).
        """
        from digitlab.numbers import read_number
        from digitlab.preprocess import clip_box, input_size

        readings = read_number(img, self.piece_probabilities, self.line)
        result = number_result(readings, self.rejection.threshold, explain)
        for d in result["digits"]:
            d["box"] = list(clip_box(tuple(d["box"]), input_size(img)))
        return result

    def predict_paths(
        self,
        paths: list[str],
        *,
        number: bool = False,
        show_input: str | None = None,
        preprocess: bool = True,
        workers: int | None = 1,
    ) -> Iterator[dict[str, Any]]:
        """One result per input, in input order; unreadable inputs give ``{"path", "error"}``.

        Single digits are classified in batches; ``show_input`` saves each 28x28 the model saw;
        ``preprocess=False`` takes images as MNIST-style already. One input that fails, for
        whatever reason, is that input's error entry: the others are still answered. Files
        are read and preprocessed in ``workers`` processes (None: one per core from
        :data:`PARALLEL_FROM` single-digit inputs on, as ``digitlab predict`` does; the model
        itself runs here). The workers are forked on Linux (they need neither torch nor ONNX
        Runtime) and spawned elsewhere, where a script that asks for them needs the
        ``if __name__ == "__main__":`` guard.
        """
        if number:
            for p in paths:
                try:
                    yield {"path": p, **self.predict_image(read_input(p), number=True)}
                except Exception as exc:  # noqa: BLE001 - one input's failure is its own entry
                    yield {"path": p, "error": input_error(exc)}
            return
        from digitlab.system import cpu_cores, imap_chunks

        if workers is None:
            workers = cpu_cores() if len(paths) >= PARALLEL_FROM else 1
        if "-" in paths:  # stdin is this process's
            workers = 1
        chunks = [paths[start : start + BATCH] for start in range(0, len(paths), BATCH)]
        tasks = [(chunk, preprocess, self.max_pixels) for chunk in chunks]
        for k, read in enumerate(imap_chunks(model_inputs, tasks, workers, fork=True)):
            results: list[dict[str, Any]] = []
            images, empties, slots = [], [], []
            for p, (image, empty, error) in zip(chunks[k], read, strict=True):
                if error is not None:
                    results.append({"path": p, "error": error})
                    continue
                slots.append(len(results))
                results.append({"path": p})
                images.append(image)
                empties.append(empty)
                if show_input:
                    _save_input(show_input, p, k * BATCH + len(results) - 1, image)
            if images:
                verdicts = self.verdicts(np.stack(images), np.array(empties))
                for slot, v in zip(slots, verdicts, strict=True):
                    results[slot].update(v)
            yield from results


BATCH = 256  # single-digit inputs classified at once
# inputs from which a folder is read in one process per core: forked workers start at once
# (1,000 files: 1,242-1,321 images/s against 720-1,230 in one process, 2 cores); two spawned
# ones cost about 1 s (2,000 files read no faster, 8,000 1.4x as fast)
PARALLEL_FROM = 1000 if FORKS else 4000


def model_inputs(
    paths: list[str], preprocess: bool, max_pixels: int
) -> list[tuple[np.ndarray | None, bool, str | None]]:
    """For each input: the 28x28 uint8 the model sees, whether it is blank, and the error
    entry of an input that cannot be read (then no image). Runs in a worker process."""
    out: list[tuple[np.ndarray | None, bool, str | None]] = []
    for p in paths:
        try:
            image, empty = model_input(read_input(p), preprocess, max_pixels)
        except Exception as exc:  # noqa: BLE001 - one input's failure is its own entry
            out.append((None, False, input_error(exc)))
            continue
        out.append((image, empty, None))
    return out


def model_input(data: bytes, preprocess: bool, max_pixels: int) -> tuple[np.ndarray, bool]:
    """The 28x28 uint8 the model sees for one image, and whether it is blank."""
    from digitlab.inputs import digit_input

    if not preprocess:
        return mnist_like(data, max_pixels), False
    prep = digit_input(data, max_pixels)
    return prep.image, prep.empty


def input_error(exc: Exception) -> str:
    """The one-line error entry of an input: a user error's message, or, for a bug, its type
    and text (``internal error``) so the other inputs are still answered."""
    if isinstance(exc, DigitlabError):
        return str(exc)
    text = " ".join(str(exc).split())[:200]
    return f"internal error ({type(exc).__name__}: {text}); please report it"


def _save_input(folder: str, path: str, index: int, image28: np.ndarray) -> None:
    from PIL import Image

    from digitlab.fileio import atomic_write

    stem = "stdin" if path == "-" else Path(path).stem
    out = Path(folder) / f"{index:06d}_{stem}.png"
    with atomic_write(out) as fh:
        Image.fromarray(image28).save(fh, format="PNG")
