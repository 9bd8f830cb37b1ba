"""Where the ink of a written line is: its groups, left to right, for the lattice to cut.

Groups are the connected components of the ink, with two corrections for how people write:
pieces stacked over each other (the two strokes of a 4 or 5, a broken stroke) are merged,
and specks are dropped. A narrow "1" stays a group of its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.preprocess import FAINT, InkMap, ink_map

SEGMENT_SIDE = 768  # numbers are wide: 1.5× the single-digit size (1024: slower, no better)
MERGE_OVERLAP = 0.5  # merge two pieces when they share this much of the narrower one's width
SPECK_AREA = 0.1  # a piece below this share of the largest piece's area is a speck or a dot...
SPECK_HEIGHT = 0.4  # ...unless it is at least this share of a digit's height (a short "1")
FRAGMENT_HEIGHT = 0.5  # a piece shorter than this share of a digit's height is a fragment...
FRAGMENT_GAP = 0.25  # ...joined to the nearest digit no farther than this × the digit height
SPLIT_ASPECT = 1.15  # one component wider than this × the digit height is touching digits
NECK = 0.4  # cut only through a column with at most this share of the mean column ink...
SURE_SPLIT = 1.4  # ...unless the piece is so wide it cannot be one digit
DIGIT_ASPECT = 0.75  # a typical digit's width / height, to guess how many digits touch


Group = tuple[list[int], int, int, int, int]  # labels, x0, x1, y0, y1 (ends exclusive)


@dataclass
class Segment:
    """One digit: ``box`` (x, y, w, h) in the input's pixels and its 28×28 uint8 ``image``."""

    box: tuple[int, int, int, int]
    image: np.ndarray


@dataclass
class Layout:
    """Where the ink of a written number is: the ink map, its components (``labels``, each
    grown a little into the anti-aliased rim), the digit-like ``groups`` left to right and the
    typical digit ``height``, all in work-scale pixels."""

    ink: InkMap
    labels: np.ndarray
    groups: list[Group]
    height: float
    widths: dict[int, int]  # each component's own width

    def one_blob(self, group: Group) -> bool:
        """Whether one component spans the group (two digits touching), not stacked strokes."""
        return max(self.widths[k] for k in group[0]) >= 0.9 * (group[2] - group[1])

    def group_ink(self, group: Group) -> np.ndarray:
        """The ink of one group inside its box, other groups' ink removed."""
        members, x0, x1, y0, y1 = group
        return self.ink.ink[y0:y1, x0:x1] * self.of(members, x0, x1, y0, y1)

    def of(self, members: list[int], x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """Which pixels of the box belong to one of the components ``members``:
        ``np.isin`` by a lookup table, in a fifth of its time."""
        wanted = np.zeros(max(self.widths) + 1, bool)
        wanted[members] = True
        return wanted[self.labels[y0:y1, x0:x1]]

    def box(self, left: int, top: int, width: int, height: int) -> tuple[int, int, int, int]:
        """A work-scale box in the input's pixels."""
        s = self.ink.scale
        return int(left * s), int(top * s), max(1, round(width * s)), max(1, round(height * s))


def locate(img: Image.Image | np.ndarray) -> Layout | None:
    """The layout of the ink in ``img`` (None when there is none)."""
    m = ink_map(img, SEGMENT_SIDE)
    labels, n = ndi.label(m.ink > 0.5, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    pieces = _pieces(labels, n)
    groups = _merge_stacked(pieces)
    if not groups:
        return None
    groups.sort(key=lambda g: g[1] + g[2])
    height = float(np.median([g[4] - g[3] for g in groups]))
    grown = np.where(labels > 0, labels, ndi.maximum_filter(labels, size=5)) * (m.ink > 0)
    return Layout(m, grown, groups, height, {p[0]: p[3] - p[2] for p in pieces})


def crop_to_ink(ink: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """``ink`` cut to the box of its clearly visible ink, with the box's (left, top) offset."""
    solid = ink > FAINT
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if rows.size == 0:
        return None
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], int(cols[0]), int(rows[0])


def _pieces(labels: np.ndarray, n: int) -> list[tuple[int, int, int, int, int, int]]:
    """(label, area, x0, x1, y0, y1) of every component."""
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    return [
        (i + 1, int(areas[i + 1]), sl[1].start, sl[1].stop, sl[0].start, sl[0].stop)
        for i, sl in enumerate(ndi.find_objects(labels))
    ]


def _merge_stacked(pieces: list[tuple[int, int, int, int, int, int]]) -> list[Group]:
    """Union pieces that overlap strongly in x, fold short fragments (a dot, half of a broken
    8) into the nearest digit, and drop specks that belong to none."""
    biggest = max(p[1] for p in pieces)
    big = [p for p in pieces if p[1] >= SPECK_AREA * biggest]
    height = float(np.median([p[5] - p[4] for p in big]))
    groups: list[Group] = [([p[0]], p[2], p[3], p[4], p[5]) for p in big]
    groups = _union_overlapping(groups)
    tall = [g for g in groups if g[4] - g[3] >= FRAGMENT_HEIGHT * height]
    for g in groups:
        if g in tall or not tall:
            continue
        k = min(range(len(tall)), key=lambda i: _gap(tall[i], g))
        if _gap(tall[k], g) <= FRAGMENT_GAP * height:
            tall[k] = _union(tall[k], g)
        else:
            tall.append(g)
    groups = _union_overlapping(tall or groups)
    for label, area, x0, x1, y0, y1 in pieces:
        if area >= SPECK_AREA * biggest:
            continue
        small: Group = ([label], x0, x1, y0, y1)
        hosts = [k for k, g in enumerate(groups) if _overlap(g, small) >= MERGE_OVERLAP]
        if hosts:
            groups[hosts[0]] = _union(groups[hosts[0]], small)
        elif y1 - y0 >= SPECK_HEIGHT * height:
            groups.append(small)
    return groups


def _union_overlapping(groups: list[Group]) -> list[Group]:
    groups = list(groups)
    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(groups)), 2):
            if _overlap(groups[i], groups[j]) >= MERGE_OVERLAP:
                groups[i] = _union(groups[i], groups[j])
                del groups[j]
                merged = True
                break
    return groups


def _gap(a: Group, b: Group) -> int:
    """Horizontal distance between two pieces (negative when they overlap)."""
    return max(a[1], b[1]) - min(a[2], b[2])


def _overlap(a: Group, b: Group) -> float:
    """Shared width over the narrower piece's width."""
    shared = min(a[2], b[2]) - max(a[1], b[1])
    return max(0, shared) / max(1, min(a[2] - a[1], b[2] - b[1]))


def _union(a: Group, b: Group) -> Group:
    return (a[0] + b[0], min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]), max(a[4], b[4]))
