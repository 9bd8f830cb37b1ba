"""read_number: a written number → its digits, left to right, with boxes (bundled model)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from digitlab.numbers import read_number
from digitlab.predict import Predictor
from digitlab.preprocess import load_image
from digitlab.synth import uploads as synth

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture(scope="module")
def segment_digits(predictor):
    """The readings of a picture with the bundled model and its line model."""

    def read(picture):
        return read_number(picture, predictor.piece_probabilities, predictor.line)

    return read


def _number(digits: list[np.ndarray], h, height: int = 60, gap: float = 0.25, overlap: int = 0):
    """Digits side by side on paper, bottoms aligned; returns (picture, [x, y, w, h] of each).

    ``overlap`` > 0 pushes the second digit that many px into the first (a touching pair).
    """
    inks = [h.enlarge(d, height) for d in digits]
    width = sum(i.shape[1] for i in inks) + round(gap * height) * len(inks) + 2 * height
    canvas = np.zeros((height * 2, width), np.float32)
    x, boxes = height // 2, []
    for n, ink in enumerate(inks):
        if n and overlap:
            x -= round(gap * height) + overlap
        y = height // 2
        region = canvas[y : y + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink, out=region)
        boxes.append((x, y, ink.shape[1], ink.shape[0]))
        x += ink.shape[1] + round(gap * height)
    return h.on_paper(canvas), boxes


def _matches_in_order(readings, labels) -> bool:
    """The digits read are the digits written, in order."""
    return [r.digit for r in readings] == list(labels)


def test_2026_gives_four_digits_left_to_right(digit_of, h, segment_digits):
    digits = [digit_of(2), digit_of(0), digit_of(2, 1), digit_of(6)]
    picture, boxes = _number(digits, h)
    segments = segment_digits(Image.fromarray(picture))
    assert len(segments) == 4
    assert _matches_in_order(segments, [2, 0, 2, 6])
    for seg, (x, y, w, hh) in zip(segments, boxes, strict=True):
        seg = seg.segment
        sx, sy, sw, sh = seg.box
        # within a tenth of the height: the faintest anti-aliased rim is not ink
        assert abs(sx - x) <= 6 and abs(sy - y) <= 6 and abs(sw - w) <= 6 and abs(sh - hh) <= 6
        assert seg.image.shape == (28, 28) and seg.image.dtype == np.uint8


def test_10_keeps_the_one_as_its_own_digit(digit_of, h, segment_digits):
    digits = [digit_of(1), digit_of(0)]
    picture, _ = _number(digits, h, gap=0.1)
    segments = segment_digits(picture)
    assert len(segments) == 2
    assert segments[0].segment.box[2] < segments[1].segment.box[2]  # the narrow 1 first
    assert _matches_in_order(segments, [1, 0])


def test_touching_pair_is_split(digit_of, h, segment_digits):
    digits = [digit_of(0), digit_of(3)]
    picture, boxes = _number(digits, h, gap=0.0, overlap=8)
    _, pieces = ndi.label(picture < 128, structure=np.ones((3, 3)))
    assert pieces == 1  # the pair really is one blob of ink...
    assert boxes[1][0] + boxes[1][2] - boxes[0][0] > 1.4 * boxes[0][3]  # ...too wide for one digit
    segments = segment_digits(picture)
    assert len(segments) == 2
    assert _matches_in_order(segments, [0, 3])


def test_pieces_stacked_over_each_other_are_one_digit(digit_of, h, segment_digits):
    ink = h.enlarge(digit_of(5), 80)
    ink[30:34] = 0  # a 5 written in two strokes: the bar and the body
    picture = h.on_paper(np.pad(ink, 30))
    _, pieces = ndi.label(picture < 128, structure=np.ones((3, 3)))
    assert pieces >= 2
    assert [r.digit for r in segment_digits(picture)] == [5]


def test_specks_are_not_digits(digit_of, h, segment_digits):
    picture, _ = _number([digit_of(4), digit_of(7)], h)
    for y, x in [(3, 3), (110, 5), (4, picture.shape[1] - 8)]:
        picture[y : y + 3, x : x + 3] = 0
    assert [r.digit for r in segment_digits(picture)] == [4, 7]


@pytest.mark.parametrize("length", [2, 3, 4, 5, 6])
def test_numbers_of_two_to_six_digits(test_digits, h, length, segment_digits):
    images, labels = test_digits
    rng = np.random.default_rng(length)
    written = rng.permutation(10)[:length]
    picks = [images[np.flatnonzero(labels == d)[7]] for d in written]
    picture, _ = _number(picks, h, gap=0.3)
    segments = segment_digits(picture)
    assert len(segments) == length
    assert _matches_in_order(segments, written)


def test_blank_page_has_no_digits(segment_digits):
    assert segment_digits(np.full((80, 200), 255, np.uint8)) == []


def test_realistic_numbers_are_mostly_counted_right(mnist, segment_digits):
    train = mnist["train"]
    samples = synth.realistic_numbers(train.images[:5000], train.labels[:5000], 60, seed=3)
    right = {kind: [] for kind in synth.NUMBER_KINDS}
    for data, text, kind in samples:
        read = segment_digits(load_image(data, max_side=1024))
        right[kind].append("".join(str(r.digit) for r in read) == text)
    separated = [ok for kind, oks in right.items() if kind != "touching" for ok in oks]
    assert np.mean(separated) >= 0.9
    assert np.mean(right["touching"]) >= 0.8


def _readings(readings) -> list[tuple[int, tuple[int, int, int, int]]]:
    return [(r.digit, r.segment.box) for r in readings]


def test_groups_read_whole_are_not_cut_and_the_numbers_read_the_same(mnist, predictor):
    from digitlab.numbers import lattice as lat
    from digitlab.numbers.lines import line_image, prefix_beam
    from digitlab.numbers.segment import locate

    test = mnist["test"]
    samples = synth.realistic_numbers(test.images, test.labels, 16, seed=8, min_len=3)
    scored: list[int] = []

    def counting(images):
        scored.append(len(images))
        return predictor.piece_probabilities(images)

    settled_any, every_cut = 0, 0
    for data, _, _ in samples:
        img = load_image(data, max_side=1024)
        layout = locate(img)
        lp = predictor.line.log_probs(line_image(layout))
        full, _ = lat._read(layout, predictor.piece_probabilities, (lp, prefix_beam(lp)), {})
        every_cut += len(lat._lattice(layout, {})[0].runs)
        settled = lat._settled(layout, predictor.piece_probabilities)
        settled_any += bool(settled)
        slices, owner, group_of = lat._slices(layout, set(settled))
        for g, ((image, box, tall), _) in settled.items():  # a group whole: its one slice's piece
            i = group_of.index(g)
            assert group_of.count(g) == 1
            same, same_box, same_tall = lat._piece(layout, slices, owner, i, i)
            assert np.array_equal(image, same) and box == same_box and tall == same_tall
        got = read_number(img, counting, predictor.line)
        # the digits, not always the boxes: a group read whole keeps its edge, which the full
        # lattice may cut off and hand to the next digit
        assert [r.digit for r in got] == [r.digit for r in full]
    assert settled_any >= 12  # most spaced-out numbers have a group read whole
    assert sum(scored) < 0.7 * every_cut  # ...and far fewer pieces are scored


def test_a_piece_scores_the_same_alone_or_among_others(mnist, predictor):
    """Why a settled group's probabilities are reused, not scored again with the lattice:
    the bundled model (ONNX Runtime) gives each image the same figures in any batch."""
    images = mnist["test"].images[:40]
    together = predictor.piece_probabilities(images)
    for start, n in ((0, 1), (3, 5), (11, 17), (29, 11)):
        alone = predictor.piece_probabilities(images[start : start + n])
        assert np.array_equal(alone, together[start : start + n])


class _SureLine:
    """A line model certain of one string, whatever the line shows."""

    def __init__(self, text: str) -> None:
        self.text = text

    def log_probs(self, image: np.ndarray) -> np.ndarray:
        from digitlab.numbers.lines import BLANK, STRIDE

        columns = image.shape[1] // STRIDE
        lp = np.full((columns, BLANK + 1), np.log(1e-6))
        lp[:, BLANK] = 0.0
        for k, c in enumerate(self.text):
            col = (k + 1) * columns // (len(self.text) + 1)
            lp[col] = np.log(1e-6)
            lp[col, int(c)] = 0.0
        return lp


def test_a_shortcut_reading_the_line_model_does_not_share_is_read_again_fully(mnist, predictor):
    from digitlab.numbers import lattice as lat
    from digitlab.numbers.lines import line_image, prefix_beam
    from digitlab.numbers.segment import locate

    test = mnist["test"]
    samples = synth.realistic_numbers(test.images, test.labels, 8, seed=9, min_len=3)
    scorer = predictor.piece_probabilities
    agreed, again = 0, 0
    for data, text, _ in samples:
        img = load_image(data, max_side=1024)
        layout = locate(img)
        settled = lat._settled(layout, scorer)
        for line in (predictor.line, _SureLine(text[0] + text)):  # an extra digit, mostly
            lp = line.log_probs(line_image(layout))
            beams = prefix_beam(lp)
            fast, fast_text = lat._read(layout, scorer, (lp, beams), settled)
            full, _ = lat._read(layout, scorer, (lp, beams), {})
            got = _readings(read_number(img, scorer, line))
            if fast_text == max(beams, key=beams.__getitem__):
                agreed += 1
                assert got == _readings(fast)
            else:
                again += 1
                assert got == _readings(full)
    assert agreed and again
