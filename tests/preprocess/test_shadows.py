"""Thin strokes on shadowed pages: the lighting is taken out, not read as ink.

Written with the training fonts (`make fonts`; CI installs them): a shadow over part of the
page makes Otsu's first guess take the shadow for ink, and a thin stroke is then lost in
what is left of it.
"""

from __future__ import annotations

import numpy as np
import pytest

from digitlab import preprocess
from digitlab.errors import DigitlabError
from digitlab.predict import Predictor
from digitlab.synth import fonts


@pytest.fixture(scope="module")
def shadowed() -> list[fonts.FontSample]:
    style = fonts.Style(pages=("shadow",), pens=("hairline", "thin"))
    try:
        return fonts.font_samples(40, 515, fonts.TRAIN_FAMILIES[:20], style=style)
    except DigitlabError as exc:  # the fonts are part of the set-up: missing is a failure
        pytest.fail(str(exc))


def _read(samples: list[fonts.FontSample]) -> tuple[int, int]:
    pred = Predictor()
    got = [pred.predict_image(s.data) for s in samples]
    right = sum(g["digit"] == int(s.text) for g, s in zip(got, samples, strict=True))
    return right, sum(not g["is_digit"] for g in got)


def test_thin_digits_under_a_shadow_are_read(shadowed, monkeypatch):
    right, rejected = _read(shadowed)
    assert right >= 37 and rejected <= 1  # measured 38 and 0 of 40
    # the same pages with the whole first guess left out of the paper's level, as before
    monkeypatch.setattr(preprocess, "_solid", lambda mask: np.zeros_like(mask))
    right_before, rejected_before = _read(shadowed)
    assert right_before <= right - 3 and rejected_before >= 3  # measured 34 and 4


def test_solid_finds_a_shadow_but_not_a_stroke():
    page = np.zeros((200, 300), bool)
    page[:, 160:] = True  # a shadow over half the page
    page[50:53, 10:120] = True  # a long stroke 3 px wide
    page[20:180, 60:75] = True  # a marker stroke, 15 px wide
    solid = preprocess._solid(page)
    assert solid[:, 170:].all()
    assert not solid[:, :150].any()
