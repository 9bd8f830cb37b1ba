"""A labelled grid of digits as a PNG: the quickest way to see what a split contains."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from digitlab.data.dataset import Dataset
from digitlab.errors import DigitlabError
from digitlab.fileio import write_bytes_atomic

MAX_DIGITS = 400


def pick_digits(dataset: Dataset, n: int, seed: int | None = None) -> np.ndarray:
    """Indices to show: the first ``n``, or ``n`` drawn at random (sorted) when seeded."""
    if not 1 <= n <= MAX_DIGITS:
        raise DigitlabError(f"--n must lie between 1 and {MAX_DIGITS}, got {n}")
    if n > len(dataset):
        raise DigitlabError(f"{dataset.name} has only {len(dataset)} digits, cannot show {n}")
    if seed is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(len(dataset), n, replace=False))


def render_grid(dataset: Dataset, indices: np.ndarray) -> bytes:
    """PNG bytes: dark digits on white, each titled with its label and index."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = len(indices) if len(indices) <= 5 else math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / cols)
    fig = Figure(figsize=(cols * 1.3, rows * 1.6 + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{dataset.name}: {len(indices)} of {len(dataset):,} digits", fontsize=13)
    for k, i in enumerate(indices.tolist()):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(dataset.images[i], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(str(int(dataset.labels[i])), fontsize=15, fontweight="bold", pad=2)
        ax.set_xlabel(f"#{i}", fontsize=8, color="0.4", labelpad=1)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("0.8")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def save_grid(
    dataset: Dataset, out: str | os.PathLike, n: int = 25, seed: int | None = None
) -> Path:
    """Write the grid of :func:`render_grid` to ``out`` (atomically); returns the path."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise DigitlabError(f"{out} is a folder; give a file name such as grid.png")
    if out.suffix.lower() != ".png":
        raise DigitlabError(f"{out}: the grid is a PNG; give a name ending in .png")
    png = render_grid(dataset, pick_digits(dataset, n, seed))
    try:
        write_bytes_atomic(out, png)
    except OSError as exc:
        raise DigitlabError(f"cannot write {out}: {exc.strerror}") from None
    return out
