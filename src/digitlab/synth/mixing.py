"""Mixing synthetic data into a training or validation set: "not a digit" images, labelled
pieces of written numbers, and realistic uploads and digits in other people's handwriting
read back as predict reads them."""

from __future__ import annotations

import numpy as np

from digitlab.data.dataset import Dataset
from digitlab.synth.negatives import negative_images
from digitlab.synth.pieces import number_pieces
from digitlab.synth.uploads import prepared_uploads


def with_negatives(ds: Dataset, n: int, seed: int, pieces: int = 0) -> Dataset:
    """The set plus ``n`` synthetic non-digits (class 10) and ``pieces`` labelled pieces
    of numbers written with the set's digits (digitlab.synth.negatives and .pieces)."""
    images, labels = [ds.images, negative_images(n, seed)], [ds.labels, np.full(n, 10)]
    if pieces:
        digits = ds.labels < 10
        x, y = number_pieces(ds.images[digits], ds.labels[digits], pieces, seed + 7)
        images.append(x)
        labels.append(y)
    made = f"{n} non-digits" + (f" and {pieces} number pieces" if pieces else "")
    return Dataset(
        np.concatenate(images),
        np.concatenate(labels).astype(np.int64),
        f"{ds.name}+{made}",
        ds.digests,
        11,
    )


def with_uploads(ds: Dataset, n: int, seed: int) -> Dataset:
    """The set plus ``n`` realistic uploads of its digits (photos, scans, canvas exports,
    thin pens) read back to 28x28 as ``predict`` reads files (digitlab.synth), so the
    model learns the inputs users send and not only MNIST's own pen and centring."""

    digits = ds.labels < 10
    x, y = prepared_uploads(ds.images[digits], ds.labels[digits], n, seed)
    return _plus(ds, x, y, f"{n} uploads")


def with_font_digits(ds: Dataset, n: int, seed: int, families: tuple[str, ...]) -> Dataset:
    """The set plus ``n`` digits in the handwriting fonts ``families`` (other writers than
    MNIST's, with pens, slant, wobble, low resolution and JPEG; digitlab.synth.fonts) read
    back to 28x28 as ``predict`` reads files."""
    from digitlab.synth.fonts import prepared_font_digits

    x, y = prepared_font_digits(n, seed, families)
    return _plus(ds, x, y, f"{len(y)} digits in {len(families)} handwriting fonts")


def with_font_non_digits(ds: Dataset, n: int, seed: int, families: tuple[str, ...]) -> Dataset:
    """The set plus ``n`` non-digits (class 10) in the hands of ``families``: letters in
    those fonts and shapes drawn with their pens (digitlab.synth.fonts.font_non_digits)."""
    from digitlab.synth.fonts import prepared_font_non_digits

    x, y = prepared_font_non_digits(n, seed, families)
    return _plus(ds, x, y, f"{len(y)} non-digits in {len(families)} handwriting fonts")


def _plus(ds: Dataset, x: np.ndarray, y: np.ndarray, made: str) -> Dataset:
    """The set plus images ``x`` labelled ``y`` (10, "not a digit", makes it 11 classes)."""
    return Dataset(
        np.concatenate([ds.images, x]),
        np.concatenate([ds.labels, y]).astype(np.int64),
        f"{ds.name}+{made}",
        ds.digests,
        max(ds.num_classes, int(y.max()) + 1 if len(y) else 0),
    )
