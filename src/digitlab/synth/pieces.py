"""Training pieces for reading numbers: what :mod:`digitlab.numbers` shows the model, labelled.

Reading a number asks the model, for every candidate piece of a line of digits, how sure it is
that the piece is one digit. A model trained on whole MNIST digits only has never seen a piece
holding a digit and half of its neighbour, or the left half of a 0, and reads many of them as
a confident digit. So we write numbers from training digits, cut them exactly as
:func:`digitlab.numbers.lattice` does, and label each candidate piece by the ink it holds: one
whole digit (and next to nothing else) keeps that digit's label; a fragment or parts of two
digits becomes "not a digit" (class 10); anything in between is left out. Build them from
training digits only.
"""

from __future__ import annotations

import numpy as np

NOT_A_DIGIT = 10
HEIGHT = 56  # px: digits are enlarged to about this height, as a number photo would show them
WHOLE = 0.9  # a piece holds a digit when it has this share of the digit's ink...
CLEAN = 0.08  # ...and at most this share of its own ink comes from other digits
FRAGMENT = 0.6  # a piece holding less than this of every digit is a fragment
TWO = 0.3  # a piece holding this much of two digits is two digits


def number_pieces(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, parts_per_digit: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled candidate pieces (28x28 uint8, labels 0-10) cut from numbers written
    with ``images``; per number, every whole-digit piece and up to ``parts_per_digit`` "not
    a digit" pieces per written digit are kept, deterministic in ``seed``."""
    from digitlab.numbers.lattice import lattice

    rng = np.random.default_rng(seed)
    out_x: list[np.ndarray] = []
    out_y: list[int] = []
    while len(out_y) < n:
        count = int(rng.integers(2, 5))
        idx = rng.choice(len(images), count, replace=False)
        ink, ids = _write(images[idx], rng)
        lat = lattice(ink)
        if lat is None:
            continue
        whole, parts = [], []
        for k, (i, j) in enumerate(lat.runs):
            label = _label(lat.owner, ids, i, j, count)
            if label is None:
                continue
            (parts if label == NOT_A_DIGIT else whole).append((k, label))
        # tall parts first: short ones (crumbs, a loose stroke) already pay a penalty
        parts.sort(key=lambda item: (bool(lat.short[item[0]]), rng.random()))
        keep = whole + parts[: parts_per_digit * count]
        for k, label in keep:
            out_x.append(lat.images[k])
            out_y.append(NOT_A_DIGIT if label == NOT_A_DIGIT else int(labels[idx[label]]))
    order = rng.permutation(len(out_y))[:n]
    return np.stack(out_x)[order], np.asarray(out_y, np.int64)[order]


def _label(owner: np.ndarray, ids: np.ndarray, i: int, j: int, count: int) -> int | None:
    """Which written digit the piece made of slices ``i..j`` is (its index), NOT_A_DIGIT, or
    None when it is neither clearly."""
    mask = (owner >= i) & (owner <= j)
    held = np.bincount(ids[mask], minlength=count + 1)[1:]  # ink pixels of each digit held
    total = np.bincount(ids.ravel(), minlength=count + 1)[1:]
    share = held / np.maximum(total, 1)
    best = int(np.argmax(share))
    if share[best] >= WHOLE and held.sum() - held[best] <= CLEAN * max(held.sum(), 1):
        return best
    if share[best] < FRAGMENT or np.sum(share >= TWO) >= 2:
        return NOT_A_DIGIT
    return None


def _write(digits: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A line of ``digits`` as an ink map (1 = ink) and which digit owns each inked pixel
    (1-based, 0 for none): spaced apart, touching or overlapping a little, baselines uneven."""
    crops = [_enlarged(d, rng) for d in digits]
    width = sum(c.shape[1] for c in crops) + HEIGHT * len(crops) + 8
    ink = np.zeros((2 * HEIGHT, width), np.float32)
    ids = np.zeros(ink.shape, np.int64)
    x = 4
    for k, c in enumerate(crops):
        if k:
            x += round(HEIGHT * rng.uniform(-0.15, 0.35))
        top = (ink.shape[0] - c.shape[0]) // 2 + int(rng.integers(-HEIGHT // 10, HEIGHT // 10 + 1))
        region = ink[top : top + c.shape[0], x : x + c.shape[1]]
        mine = (c > 0.5) & (c >= region)
        ids[top : top + c.shape[0], x : x + c.shape[1]][mine] = k + 1
        np.maximum(region, c, out=region)
        x += c.shape[1]
    return ink, ids


def _enlarged(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 digit cut to its ink and enlarged (bicubic) to about ``HEIGHT`` px tall."""
    from digitlab.synth.uploads import ink_crop, resize_ink

    return resize_ink(ink_crop(digit), round(HEIGHT * rng.uniform(0.85, 1.1)))
