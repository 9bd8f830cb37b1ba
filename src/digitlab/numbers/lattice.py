"""The lattice: cut each ink group along candidate seams, let the piece model score every
run of slices that could be one digit, and keep the most confident split of the line.

Shape alone cannot tell two touching digits from one wide digit, nor the loose flag of a 5
from a 1, so the model decides where one digit ends. A line model's likelihood
(:mod:`digitlab.numbers.lines`) then re-ranks the readings the cuts allow. Measurements and
what was tried: docs/numbers.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.numbers.lines import (
    LineReader,
    ctc_log_likelihoods,
    line_image,
    prefix_beam,
)
from digitlab.numbers.segment import Layout, Segment, crop_to_ink, locate
from digitlab.preprocess import normalise_ink

# Lengths are in units of the line's typical digit height.
CUT_ABOVE = 0.3  # a group wider than this may hold several digits
CUT_MARGIN = 0.1  # no cut closer than this to a group's edge
CUT_SPACING = 0.12  # candidate cuts at least this far apart
PROMINENCE = 0.25  # a cut at a local minimum crosses this much less ink than both sides' peaks
DENSE_ABOVE = 0.8  # a group wider than this is likely digits touching: it is cut densely...
MAX_GAP = 0.4  # ...until no stretch longer than this is left without a cut
BEND = 1.0  # a seam's step sideways costs as much as crossing one pixel of ink
SEAM_HEIGHT = 40  # px: seams are sought on a copy shrunk until a digit is about this tall
SEAM_ROWS = (0.33, 0.5, 0.67)  # seams are sought through these heights of a group
SEAM_DISTINCT = 0.04  # seams leaving shares of a group's ink this close on their left are one
PIECE_WIDTH = 1.3  # a run of slices wider than this is not one digit (a whole group may be)
MAX_SLICES = 8  # a digit is made of at most this many slices
CRUMB = 0.1  # a piece's component below this share of its largest is a neighbour's crumb
SHORT = 0.55  # a piece shorter than this is a fragment...
SHORT_PENALTY = 3.0  # ...and pays this much log-confidence
LINE_WEIGHT = 2.0  # the line model's log-likelihood counts this much against the pieces'
SETTLE_WIDTH = 1.2  # a group no wider than this, read whole as a digit this surely,...
SETTLE_CONFIDENCE = 0.9  # ...is not cut while the line model agrees (docs/numbers.md)

Scorer = Callable[[np.ndarray], np.ndarray]  # uint8 (N,28,28) -> probabilities (N,C)
Piece = tuple[np.ndarray, tuple[int, int, int, int], bool]  # 28×28, box in the input, tall
Settled = dict[int, tuple[Piece, np.ndarray]]  # group -> its piece whole, its probabilities


@dataclass
class Reading:
    """One digit found in a number: where it is and what the model saw (``segment``), the
    piece model's ``probabilities``, and the ``digit`` read with its ``confidence``."""

    segment: Segment
    probabilities: np.ndarray
    digit: int
    confidence: float


@dataclass
class Lattice:
    """The candidate pieces of one number: ``runs`` of slices (first, last) with each run's
    28×28 ``images``, ``boxes`` in the input and whether it is too ``short`` for a digit."""

    n_slices: int
    runs: list[tuple[int, int]]
    images: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    short: np.ndarray
    owner: np.ndarray  # the slice that owns each work-scale pixel, -1 for none
    layout: Layout


def read_number(
    img: Image.Image | np.ndarray, probabilities: Scorer, line: LineReader | None = None
) -> list[Reading]:
    """The digits of the number in ``img``, left to right (empty when there is no ink).

    ``probabilities`` maps 28×28 images to class probabilities whose first ten columns are
    the digits (``Predictor.probabilities``). With a ``line`` model, its reading of the whole
    line re-ranks the lattice's (:func:`rerank`), and a group that the piece model reads whole
    as one sure digit is not cut (:func:`_settled`): a third to a half of the pieces. Where
    the reading that comes out is not the line model's own likeliest, the line is read again
    with every group cut, so the shortcut never overrules both models.
    """
    layout = locate(img)
    if layout is None:
        return []
    image = line_image(layout) if line is not None else None
    if line is None or image is None:
        return _read(layout, probabilities, None, {})[0]
    lp = line.log_probs(image)
    beams = prefix_beam(lp)
    settled = _settled(layout, probabilities)
    readings, text = _read(layout, probabilities, (lp, beams), settled)
    if settled and text != max(beams, key=beams.__getitem__):
        readings, _ = _read(layout, probabilities, (lp, beams), {})
    return readings


def _read(
    layout: Layout,
    probabilities: Scorer,
    line: tuple[np.ndarray, dict[str, float]] | None,
    settled: Settled,
) -> tuple[list[Reading], str]:
    """The readings of the lattice that leaves the ``settled`` groups whole (their pieces
    and probabilities given), re-ranked by the line model's log-probabilities and beams
    where given, and their digits as a string."""
    lat, whole = _lattice(layout, {g: piece for g, (piece, _) in settled.items()})
    fresh = [k for k, g in enumerate(whole) if g < 0]
    scored = iter(probabilities(lat.images[fresh]) if fresh else ())
    # a settled piece is not scored again: ONNX Runtime gives a piece the same figures in any
    # batch (tests/numbers/test_read_number.py), torch the same to 1e-7
    probs = np.stack([next(scored) if g < 0 else settled[g][1] for g in whole])
    path = best_path(lat, probs)
    digits = [int(probs[k, :10].argmax()) for k in path]
    if line is not None:
        path, digits = rerank(lat, probs, path, *line)
    # confidence stays the piece model's (calibrated, and it alone knows "not a digit"): a
    # digit the line model chose against its piece's vote may come out doubtful. Blending in
    # the line model's own probability read 1 more of 800 val numbers but 8-35 more of 500
    # non-digits as numbers.
    readings = [
        Reading(Segment(lat.boxes[k], lat.images[k]), probs[k], d, float(probs[k, d]))
        for k, d in zip(path, digits, strict=True)
    ]
    return readings, "".join(map(str, digits))


def _settled(layout: Layout, probabilities: Scorer) -> Settled:
    """The groups that need no cut, with their pieces and probabilities: no wider than
    ``SETTLE_WIDTH`` digit heights, tall enough for a digit, and read whole as a digit with
    ``SETTLE_CONFIDENCE``."""
    h = layout.height
    narrow = [
        g
        for g, (_, x0, x1, y0, y1) in enumerate(layout.groups)
        if x1 - x0 <= SETTLE_WIDTH * h and y1 - y0 >= SHORT * h
    ]
    if not narrow:
        return {}
    pieces = [_group_piece(layout, g) for g in narrow]
    probs = probabilities(np.stack([p[0] for p in pieces]))
    return {
        g: (piece, prob)
        for g, piece, prob in zip(narrow, pieces, probs, strict=True)
        if prob[:10].max() >= SETTLE_CONFIDENCE
    }


def _group_piece(layout: Layout, g: int) -> Piece:
    """Group ``g`` whole: the piece of its one slice when it is not cut."""
    group = layout.groups[g]
    return _render(layout.group_ink(group), layout, group[1], group[3])


def rerank(
    lat: Lattice,
    probs: np.ndarray,
    own: list[int],
    lp: np.ndarray,
    beams: dict[str, float] | None = None,
) -> tuple[list[int], list[int]]:
    """The path and digits of the reading that both models like best.

    Candidates are the lattice's own best reading (the path ``own``) and the line model's
    :data:`BEAM` likeliest (``beams``: :func:`prefix_beam` of ``lp`` unless given); each is
    scored by the best lattice path that spells it (sum of the pieces' log probabilities of
    those digits) plus ``LINE_WEIGHT`` × its CTC log-likelihood. A string no lattice path
    spells is not a candidate: the pieces give the boxes. Where the line model finds the
    lattice's reading impossible (more digits than its columns can hold), it has nothing to
    say and the lattice's reading stands.
    """
    logp = np.log(np.maximum(probs[:, :10], 1e-9)) - SHORT_PENALTY * lat.short[:, None]
    own_digits = [int(probs[k, :10].argmax()) for k in own]
    own_text = "".join(map(str, own_digits))
    spelled = [
        (text, *_spelled(lat, logp, text))
        for text in (prefix_beam(lp) if beams is None else beams)
        if text and text != own_text
    ]
    spelled = [c for c in spelled if c[2] is not None]
    own_line, *lines = ctc_log_likelihoods(lp, [own_text] + [text for text, _, _ in spelled])
    if not np.isfinite(own_line):
        return own, own_digits
    best = (float(logp[own, own_digits].sum()) + LINE_WEIGHT * own_line, own, own_text)
    for (text, score, path), line in zip(spelled, lines, strict=True):
        total = score + LINE_WEIGHT * line
        if total > best[0]:
            best = (total, path, text)
    _, path, text = best
    return path, [int(c) for c in text]


def _spelled(lat: Lattice, logp: np.ndarray, text: str) -> tuple[float, list[int] | None]:
    """The best score of a lattice path whose pieces read ``text``, and that path."""
    want = np.array([int(c) for c in text])
    m = len(want)
    best = np.full((lat.n_slices + 1, m + 1), -np.inf)
    best[0, 0] = 0.0
    back = np.full((lat.n_slices + 1, m + 1), -1, np.int64)
    for k in sorted(range(len(lat.runs)), key=lambda k: lat.runs[k][1]):
        i, j = lat.runs[k]
        cand = best[i, :-1] + logp[k, want]
        better = cand > best[j + 1, 1:]
        best[j + 1, 1:][better] = cand[better]
        back[j + 1, 1:][better] = k
    if not np.isfinite(best[lat.n_slices, m]):
        return float("-inf"), None
    path, end = [], lat.n_slices
    for c in range(m, 0, -1):
        path.append(int(back[end, c]))
        end = lat.runs[path[-1]][0]
    return float(best[lat.n_slices, m]), path[::-1]


def lattice(img: Image.Image | np.ndarray) -> Lattice | None:
    """Every candidate piece of the number in ``img`` (None when there is no ink)."""
    layout = locate(img)
    return None if layout is None else _lattice(layout, {})[0]


def _lattice(layout: Layout, settled: dict[int, Piece]) -> tuple[Lattice, list[int]]:
    """The candidate pieces of ``layout``, every group cut but the ``settled`` ones, whose
    pieces are given; and for each run, the settled group it is (-1: a piece made here)."""
    slices, owner, group_of = _slices(layout, set(settled))
    runs = _candidate_runs(slices, group_of, layout.height)
    whole = [group_of[i] if i == j and group_of[i] in settled else -1 for i, j in runs]
    pieces = [
        settled[g] if g >= 0 else _piece(layout, slices, owner, i, j)
        for (i, j), g in zip(runs, whole, strict=True)
    ]
    lat = Lattice(
        len(slices),
        runs,
        np.stack([p[0] for p in pieces]),
        [p[1] for p in pieces],
        np.array([not p[2] for p in pieces]),
        owner,
        layout,
    )
    return lat, whole


def best_path(lat: Lattice, probs: np.ndarray) -> list[int]:
    """Indices into ``lat.runs`` of the digits, left to right: the cover of all slices by
    runs with the largest sum of log digit confidence."""
    score = np.log(np.maximum(probs[:, :10].max(axis=1), 1e-9)) - SHORT_PENALTY * lat.short
    best = np.full(lat.n_slices + 1, -np.inf)
    best[0] = 0.0
    back = np.zeros(lat.n_slices + 1, np.int64)
    for k in sorted(range(len(lat.runs)), key=lambda k: lat.runs[k][1]):
        i, j = lat.runs[k]
        if best[i] + score[k] > best[j + 1]:
            best[j + 1], back[j + 1] = best[i] + score[k], k
    path, end = [], lat.n_slices
    while end > 0:
        path.append(int(back[end]))
        end = lat.runs[path[-1]][0]
    return path[::-1]


Slice = tuple[int, int, int, int]  # x0, x1, y0, y1 of its ink, work-scale pixels


def _slices(layout: Layout, settled: set[int]) -> tuple[list[Slice], np.ndarray, list[int]]:
    """Cut each group but the ``settled`` ones along its candidate seams: the slices left to
    right, a map from each pixel to the slice that owns it (-1 for none), and the group of
    each slice."""
    owner = np.full(layout.labels.shape, -1, np.int32)
    slices: list[Slice] = []
    group_of: list[int] = []
    for g, group in enumerate(layout.groups):
        members, x0, x1, y0, y1 = group
        mask = layout.of(members, x0, x1, y0, y1)
        ink = layout.ink.ink[y0:y1, x0:x1] * mask
        seams = [] if g in settled else _candidate_seams(ink, layout.height)
        side = np.zeros(ink.shape, np.int32)
        cols = np.arange(ink.shape[1])
        for seam in seams:
            side += cols[None, :] >= seam[:, None]
        for t in range(len(seams) + 1):
            part = mask & (side == t) & (owner[y0:y1, x0:x1] < 0)
            rows, cs = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
            if rows.size == 0:
                continue
            owner[y0:y1, x0:x1][part] = len(slices)
            group_of.append(g)
            slices.append((x0 + cs[0], x0 + cs[-1] + 1, y0 + rows[0], y0 + rows[-1] + 1))
    return slices, owner, group_of


def _candidate_seams(ink: np.ndarray, height: float) -> list[np.ndarray]:
    """Top-to-bottom paths of least ink where a group might hold two digits side by side,
    each as the column it takes in every row, ordered by the share of ink left of it."""
    h, w = ink.shape
    if w <= CUT_ABOVE * height or h < 3:
        return []
    f = int(height // SEAM_HEIGHT)
    if f > 1:  # nearly the same paths in a fraction of the time
        small = _block_mean(ink, f)
        return [
            np.minimum(np.repeat(s, f)[:h] * f + f // 2, w - 1)
            for s in _candidate_seams(small, height / f)
        ]
    down, moves_down = _accumulate(ink)
    up, moves_up = _accumulate(ink[::-1])
    total = max(float(ink.sum()), 1e-6)
    cols = np.arange(w)
    found: dict[int, tuple[np.ndarray, float]] = {}
    for row in SEAM_ROWS:
        r = min(h - 2, max(1, round(row * (h - 1))))
        through = down[r] + up[h - 1 - r] - ink[r]  # least ink of a path through (r, x)
        for c in _candidate_cuts(through, height):
            top = _trace(moves_down[: r + 1], c)
            bottom = _trace(moves_up[: h - r], c)[::-1]
            seam = np.concatenate([top, bottom[1:]])
            left = float((ink * (cols[None, :] < seam[:, None])).sum()) / total
            key = round(left / SEAM_DISTINCT)
            if key not in found or found[key][1] > through[c]:
                found[key] = (seam, float(through[c]))
    return [found[k][0] for k in sorted(found)]


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """``a`` shrunk ``f`` times by averaging f×f blocks (edges padded with zeros)."""
    h, w = -(-a.shape[0] // f) * f, -(-a.shape[1] // f) * f
    padded = np.zeros((h, w), a.dtype)
    padded[: a.shape[0], : a.shape[1]] = a
    return padded.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _accumulate(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic programming down the rows of ``cost``: the least cost of a path from the top
    row to each pixel, moving at most one column per row, and each row's move (-1, 0, +1:
    where the path came from)."""
    h, w = cost.shape
    acc = np.empty((h, w))
    acc[0] = cost[0]
    moves = np.zeros((h, w), np.int8)
    left, right = np.full(w, np.inf), np.full(w, np.inf)  # from the column left / right
    least = np.empty(w)
    for y in range(1, h):
        prev = acc[y - 1]
        np.add(prev[:-1], BEND, out=left[1:])
        np.add(prev[1:], BEND, out=right[:-1])
        np.minimum(np.minimum(left, prev, out=least), right, out=least)
        # ties go left, then straight down (the order argmin over the three would take)
        moves[y] = np.where(left == least, -1, np.where(prev == least, 0, 1))
        np.add(cost[y], least, out=acc[y])
    return acc, moves


def _trace(moves: np.ndarray, end: int) -> np.ndarray:
    """The columns, top row first, of the path that :func:`_accumulate` found to ``end``."""
    xs = np.empty(len(moves), np.int64)
    xs[-1] = end
    for y in range(len(moves) - 1, 0, -1):
        xs[y - 1] = xs[y] + moves[y, xs[y]]
    return xs


def _candidate_cuts(profile: np.ndarray, height: float) -> list[int]:
    """Columns where a group might hold two digits side by side: local minima of the ink a
    cut there crosses, kept apart, with a cut forced into any long stretch without one."""
    width = len(profile)
    profile = ndi.uniform_filter1d(profile, max(1, round(height / 20)))
    margin = max(1, round(CUT_MARGIN * height))
    lo, hi = margin, width - margin
    if hi <= lo:
        return []
    inner = profile[lo:hi]
    left = np.r_[np.inf, inner[:-1]]
    right = np.r_[inner[1:], np.inf]
    minima = np.flatnonzero((inner <= left) & (inner < right)) + lo
    peak_left = np.maximum.accumulate(profile)
    peak_right = np.maximum.accumulate(profile[::-1])[::-1]
    depth = np.minimum(peak_left, peak_right)
    minima = [c for c in minima if profile[c] <= (1 - PROMINENCE) * depth[c]]
    spacing = max(1, round(CUT_SPACING * height))
    cuts: list[int] = []
    for c in sorted(minima, key=lambda c: profile[c]):  # lowest first, keep those far apart
        if all(abs(c - k) >= spacing for k in cuts):
            cuts.append(int(c))
    if not cuts:
        cuts.append(int(lo + np.argmin(inner)))  # the best cut is always worth a try
    cuts.sort()
    stretches = list(zip([0, *cuts], [*cuts, width], strict=True))
    if width <= DENSE_ABOVE * height:
        stretches = []
    while stretches:  # any long stretch without a cut gets its best one, until none is left
        a, b = stretches.pop()
        a2, b2 = max(a + spacing, lo), min(b - spacing, hi)
        if b - a > MAX_GAP * height and b2 > a2:
            c = int(a2 + np.argmin(profile[a2:b2]))
            cuts.append(c)
            stretches += [(a, c), (c, b)]
    return sorted(set(cuts))


def _candidate_runs(
    slices: list[Slice], group_of: list[int], height: float
) -> list[tuple[int, int]]:
    """(first, last) slice of every run that could be one digit; single slices and whole
    groups always."""
    runs = []
    for g in sorted(set(group_of)):
        members = [i for i, k in enumerate(group_of) if k == g]
        if len(members) > 1:
            runs.append((members[0], members[-1]))
    for i in range(len(slices)):
        x0 = slices[i][0]
        x1 = slices[i][1]
        runs.append((i, i))
        for j in range(i + 1, min(len(slices), i + MAX_SLICES)):
            x0, x1 = min(x0, slices[j][0]), max(x1, slices[j][1])
            if x1 - x0 > PIECE_WIDTH * height:
                break
            runs.append((i, j))
    return sorted(set(runs))


def _piece(layout: Layout, slices: list[Slice], owner: np.ndarray, i: int, j: int) -> Piece:
    """The 28×28 image of slices i..j together, its box in the input, and whether it is tall
    enough to be a digit."""
    run = slices[i : j + 1]
    x0, x1 = min(s[0] for s in run), max(s[1] for s in run)
    y0, y1 = min(s[2] for s in run), max(s[3] for s in run)
    own = owner[y0:y1, x0:x1]
    return _render(layout.ink.ink[y0:y1, x0:x1] * ((own >= i) & (own <= j)), layout, x0, y0)


def _render(ink: np.ndarray, layout: Layout, x0: int, y0: int) -> Piece:
    """A piece's ink (its box's top left at work-scale ``x0``, ``y0``) without crumbs, in
    MNIST form, with its box in the input and whether it is tall enough to be a digit."""
    cropped = crop_to_ink(_without_crumbs(ink))
    if cropped is None:
        h, w = ink.shape
        return np.zeros((28, 28), np.uint8), layout.box(x0, y0, w, h), False
    crop, left, top = cropped
    image, _ = normalise_ink(crop)
    box = layout.box(x0 + left, y0 + top, crop.shape[1], crop.shape[0])
    return image, box, crop.shape[0] >= SHORT * layout.height


def _without_crumbs(ink: np.ndarray) -> np.ndarray:
    """``ink`` without the crumbs a seam leaves of a neighbouring digit: components much
    smaller than the largest (with their faint rims)."""
    labels, n = ndi.label(ink > 0.5, structure=np.ones((3, 3), bool))
    if n < 2:
        return ink
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    areas[0] = 0
    drop = areas < CRUMB * areas.max()
    drop[0] = False
    if not drop.any():
        return ink
    crumbs = ndi.binary_dilation(drop[labels], iterations=2)
    kept = ndi.binary_dilation(~drop[labels] & (labels > 0), iterations=2)
    return ink * ~(crumbs & ~kept)
