"""train.line: the numbers the line model learns from."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.numbers.lines import LINE_HEIGHT
from digitlab.synth import fonts
from digitlab.train.line import make_lines


@pytest.mark.slow
def test_lines_are_numbers_up_to_the_longest_asked_in_mnist_and_in_fonts(mnist):
    val = mnist["train"].subset(slice(50_000, 60_000), "val")
    families = fonts.TRAIN_FAMILIES[:4]
    one = make_lines(val.images, val.labels, 30, 7, workers=1, max_digits=10, fonts=12,
                     families=families)  # fmt: skip
    two = make_lines(val.images, val.labels, 30, 7, workers=2, max_digits=10, fonts=12,
                     families=families)  # fmt: skip
    assert one.texts == two.texts
    assert all(np.array_equal(a, b) for a, b in zip(one.images, two.images, strict=True))
    assert 40 <= len(one.texts) <= 42  # a line with no ink found is left out
    assert all(im.shape[0] == LINE_HEIGHT and im.dtype == np.uint8 for im in one.images)
    lengths = [len(t) for t in one.texts]
    assert min(lengths) == 2 and max(lengths) == 10 and all(t.isdigit() for t in one.texts)
    # the last 12 are the fonts' own numbers: the same texts as font_samples draws
    seeds = np.random.default_rng(7).integers(2**62, size=2)
    drawn = fonts.font_samples(12, int(seeds[1]), families, lengths=(2, 10))
    assert one.texts[-12:] == [s.text for s in drawn]


def test_lines_without_fonts_are_the_mnist_lines_alone(mnist):
    val = mnist["train"].subset(slice(50_000, 60_000), "val")
    lines = make_lines(val.images, val.labels, 20, 3, workers=1)
    assert 19 <= len(lines.texts) <= 20 and max(len(t) for t in lines.texts) <= 6
