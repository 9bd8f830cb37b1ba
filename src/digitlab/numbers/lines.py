"""A second opinion on a written number: a line recogniser that needs no cuts.

:mod:`digitlab.numbers.lattice` cuts a line into candidate pieces and asks the digit model
about each.
Where two digits overlap (a 1 whose stroke crosses the 9 beside it), no cut parts them and
the piece model reads the pair as a 7, or drops one. The line model reads the whole line at
once: a small CNN over the line scaled to 32 px high, one column of class scores (ten digits
and CTC's blank) per 4 px, trained with CTC (Graves et al., 2006) on numbers written with
training digits (:mod:`digitlab.train.line`). It never says where a digit is, so it does not
replace the lattice: it re-ranks the lattice's readings (:func:`rerank`), and boxes and
per-digit images still come from the pieces.

This module needs numpy and onnxruntime only; the model ships as ``line.onnx`` beside the
digit model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from digitlab.numbers.segment import Layout

LINE_FILE = "line.onnx"
LINE_HEIGHT = 32  # px: the line model's input height
DIGIT_HEIGHT = 22  # px: the line's typical digit is scaled to this height...
MARGIN = 4  # ...with this much background left and right
STRIDE = 4  # px of line per output column
MAX_WIDTH = 4096  # px: a wider line (a 20000x10 strip) is left to the lattice alone
BLANK = 10  # CTC's "no new digit here" class
BEAM = 8  # readings kept by the line model's prefix beam search
LN2 = math.log(2.0)


def line_image(layout: Layout) -> np.ndarray | None:
    """The ink of the line's digit groups (specks dropped) as uint8 (32, W), W a multiple of
    :data:`STRIDE`, digits about :data:`DIGIT_HEIGHT` px high; None when too wide to read."""
    groups = layout.groups
    members = [k for g in groups for k in g[0]]
    x0, x1 = min(g[1] for g in groups), max(g[2] for g in groups)
    y0, y1 = min(g[3] for g in groups), max(g[4] for g in groups)
    ink = layout.ink.ink[y0:y1, x0:x1] * layout.of(members, x0, x1, y0, y1)
    h, w = ink.shape
    scale = min(DIGIT_HEIGHT / max(layout.height, 1.0), (LINE_HEIGHT - 2) / h)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    width = nw + 2 * MARGIN
    width += -width % STRIDE
    if width > MAX_WIDTH:
        return None
    small = Image.fromarray(ink.astype(np.float32), "F").resize((nw, nh), Image.Resampling.BILINEAR)
    out = np.zeros((LINE_HEIGHT, width), np.float32)
    top = (LINE_HEIGHT - nh) // 2
    out[top : top + nh, MARGIN : MARGIN + nw] = np.asarray(small)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


class LineReader:
    """ONNX Runtime on a ``line.onnx``: a line image (32, W) uint8 -> log-probabilities
    (W/4, 11), one row per 4 px column, the last class CTC's blank."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        from digitlab.runtime import load_session

        self.session = load_session(path, threads, "line model")
        self.path = Path(path)

    def log_probs(self, line_u8: np.ndarray) -> np.ndarray:
        if line_u8.ndim != 2 or line_u8.shape[0] != LINE_HEIGHT or line_u8.shape[1] < STRIDE:
            raise DigitlabError(
                f"a line image is {LINE_HEIGHT} px high and at least {STRIDE} wide, "
                f"not {line_u8.shape}"
            )
        x = np.ascontiguousarray(line_u8, dtype=np.uint8)[None]
        z = self.session.run(None, {"line": x})[0][0].astype(np.float64)  # (W/4, 11)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ------------------------------------------------------------------------------ CTC


def ctc_log_likelihood(lp: np.ndarray, digits: str) -> float:
    """log P(digits | line) under CTC: the sum over every alignment of the string to the
    columns of ``lp`` (T, 11), by the forward algorithm; -inf when it cannot fit."""
    return ctc_log_likelihoods(lp, [digits])[0]


def ctc_log_likelihoods(lp: np.ndarray, texts: list[str]) -> list[float]:
    """:func:`ctc_log_likelihood` of each of ``texts``, the forward algorithm run on all at
    once (a shorter string's states past its end never feed its own)."""
    out = [float(lp[:, BLANK].sum()) if not t else 0.0 for t in texts]
    which = [k for k, t in enumerate(texts) if t]
    if not which:
        return out
    longest = max(len(texts[k]) for k in which)
    ext = np.full((len(which), 2 * longest + 1), BLANK)  # blank, d1, blank, d2, ..., blank
    for row, k in enumerate(which):
        ext[row, 1 : 2 * len(texts[k]) : 2] = [int(c) for c in texts[k]]
    # a step may skip the blank between two different digits
    skip = np.zeros(ext.shape, bool)
    skip[:, 2:] = (ext[:, 2:] != BLANK) & (ext[:, 2:] != ext[:, :-2])
    alpha = np.full(ext.shape, -np.inf)
    alpha[:, 0], alpha[:, 1] = lp[0, BLANK], lp[0, ext[:, 1]]
    none = np.full((len(which), 2), -np.inf)
    for t in range(1, lp.shape[0]):
        prev1 = np.concatenate((none[:, :1], alpha[:, :-1]), axis=1)
        prev2 = np.where(skip, np.concatenate((none, alpha[:, :-2]), axis=1), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + lp[t, ext]
    for row, k in enumerate(which):
        end = 2 * len(texts[k])
        out[k] = float(np.logaddexp(alpha[row, end], alpha[row, end - 1]))
    return out


def prefix_beam(lp: np.ndarray, width: int = BEAM) -> dict[str, float]:
    """The ``width`` likeliest strings under CTC (prefix beam search) with their log P.

    A string new at a step has one way in, so where even the likeliest digit cannot lift a
    beam's new strings above ``width`` strings that stay anyway (in a column of blank, most
    columns), they are not made: the same strings and figures in less time (docs/numbers.md).
    """
    rows = lp.tolist()  # Python floats: a few hundred thousand additions per line
    beams: dict[str, tuple[float, float]] = {"": (0.0, -math.inf)}  # (ends in blank, in digit)
    for row in rows:
        totals = [_logaddexp(pb, pd) for pb, pd in beams.values()]
        stays = sorted((t + row[BLANK] for t in totals), reverse=True)  # their least log P
        floor = stays[width - 1] if len(stays) >= width else -math.inf
        best_digit = max(row[:BLANK])
        children: dict[str, list[int]] = {}  # the beams one digit longer than each beam
        for k in sorted(beams):
            if k:
                children.setdefault(k[:-1], []).append(int(k[-1]))
        nxt: dict[str, list[float]] = {}
        for (prefix, (pb, pd)), total in zip(beams.items(), totals, strict=True):
            entry = nxt.setdefault(prefix, [-math.inf, -math.inf])
            entry[0] = _logaddexp(entry[0], total + row[BLANK])
            last = int(prefix[-1]) if prefix else -1
            hopeless = total + best_digit < floor  # none of its new strings can make the top
            for c in children.get(prefix, []) if hopeless else range(10):
                longer = nxt.setdefault(prefix + str(c), [-math.inf, -math.inf])
                # a repeat needs a blank between; without one it is the same string (entry)
                longer[1] = _logaddexp(longer[1], (pb if c == last else total) + row[c])
            if last >= 0:
                entry[1] = _logaddexp(entry[1], pd + row[last])
        ranked = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:width]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return {k: _logaddexp(*v) for k, v in beams.items()}


def _logaddexp(x: float, y: float) -> float:
    """log(exp(x) + exp(y)) on Python floats, as ``numpy.logaddexp`` computes it (and 30
    times faster on scalars)."""
    if x == y:
        return x + LN2
    d = x - y
    if d > 0:
        return x + math.log1p(math.exp(-d))
    if d <= 0:
        return y + math.log1p(math.exp(d))
    return x + y  # NaN
