"""The preprocessing's own median, dilation and Otsu threshold give the answers of numpy, scipy
and the textbook exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from digitlab.preprocess import _otsu, grow, median

floats = st.floats(-1e6, 1e6, width=32) | st.just(float("nan"))


@settings(max_examples=300, deadline=None)
@given(arrays(np.float32, st.integers(1, 60), elements=floats))
def test_median_is_numpys_median_bit_for_bit(v):
    want = np.median(v)
    got = median(v)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 4)), elements=floats))
def test_median_of_columns_is_numpys_median_along_axis_0(v):
    assert np.array_equal(median(v, axis=0), np.median(v, axis=0), equal_nan=True)


def test_median_leaves_other_inputs_to_numpy():
    assert median(np.array([3, 1, 2])) == 2.0  # integers: numpy's float answer
    assert np.isnan(median(np.array([np.nan, 1.0, 2.0], np.float32)))


@settings(max_examples=300, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 30), st.integers(1, 30))))
def test_grow_is_a_5x5_maximum_filter(mask):
    assert np.array_equal(grow(mask), ndi.maximum_filter(mask.view(np.uint8), size=5) > 0)


def textbook_otsu(x: np.ndarray) -> float:
    """Otsu's threshold as written out: a 256-bin histogram between the extremes, and the
    split that maximises the between-class variance."""
    v = x.ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-6:
        return hi
    bins = np.minimum(((v - lo) * (255.999 / (hi - lo))).astype(np.int64), 255)
    hist = np.bincount(bins, minlength=256).astype(np.float64)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * np.arange(256))
    between = (m0[-1] * w0 - w0[-1] * m0) ** 2 / np.maximum(w0 * (w0[-1] - w0), 1e-12)
    return lo + (int(np.argmax(between[:-1])) + 1) * (hi - lo) / 256


@settings(max_examples=300, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 60), st.integers(1, 60)),
        elements=st.floats(-10, 10, width=32),
    )
)
def test_otsu_is_the_textbook_threshold(x):
    assert _otsu(x) == textbook_otsu(x)
