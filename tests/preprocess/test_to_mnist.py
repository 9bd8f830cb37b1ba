"""to_gray_ink and to_mnist: any upload of one digit → MNIST's 28×28 form."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from digitlab.preprocess import (
    load_image,
    main_ink,
    prepare,
    stroke_width,
    to_gray_ink,
    to_mnist,
)


def _bbox_side(img: np.ndarray) -> int:
    rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
    return max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)


def test_mnist_test_digits_come_back_almost_unchanged(test_digits):
    images = test_digits[0][:1000]
    out = np.stack([to_mnist(x) for x in images])
    diff = np.abs(out.astype(int) - images).mean(axis=(1, 2))
    assert diff.mean() < 1.5  # grey levels out of 255, averaged over pixels and digits
    assert np.median(diff) < 1.0
    assert (diff < 3).mean() > 0.9  # the rest mostly differ by a one-pixel centring shift


def test_mnist_form_longest_side_20_and_centre_of_mass_at_14(digit_of, h):
    small = h.enlarge(digit_of(4), 30)
    picture = h.on_paper(h.place(small, (300, 400), (250, 10)))  # bottom-left corner
    out = prepare(Image.fromarray(picture))
    assert not out.empty
    assert _bbox_side(out.image) == 20
    cy, cx = ndi.center_of_mass(out.image.astype(float))
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    x, y, w, hh = out.box
    assert abs(x - 10) <= 2 and abs(y - 250) <= 2 and abs(hh - 30) <= 2


def test_polarity_either_way_gives_the_same_digit(digit_of, h):
    ink = h.place(h.enlarge(digit_of(5), 150), (200, 220), (25, 40))
    dark_on_light = h.on_paper(ink)
    light_on_dark = 255 - dark_on_light
    a, b = to_mnist(dark_on_light), to_mnist(light_on_dark)
    assert np.abs(a.astype(int) - b).mean() < 3
    assert h.iou(a, b) > 0.9


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (30, 90, 220)])
def test_canvas_export_strokes_on_transparent_background(digit_of, h, colour):
    ink = h.place(h.enlarge(digit_of(2), 200), (280, 280), (40, 50))
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.rint(ink * 255)
    data = h.encode(Image.fromarray(rgba, "RGBA"), "PNG")
    got = to_mnist(load_image(data))
    assert h.iou(got, to_mnist(h.on_paper(ink))) > 0.85


def test_coloured_ink_on_tinted_paper_is_found(digit_of, h):
    ink = h.place(h.enlarge(digit_of(6), 120), (160, 160), (20, 30))[..., None]
    paper, pen = np.array([250, 245, 200]), np.array([235, 200, 20])  # yellow on cream
    rgb = np.rint(paper * (1 - ink) + pen * ink).astype(np.uint8)
    got = to_mnist(Image.fromarray(rgb, "RGB"))
    assert h.iou(got, to_mnist(h.on_paper(ink[..., 0]))) > 0.85


def test_uneven_lighting_leaves_only_the_digit(digit_of, h):
    ink = h.place(h.enlarge(digit_of(8), 160), (240, 320), (40, 100))
    light = np.linspace(1.0, 0.45, 320)[None, :] * np.linspace(1.0, 0.8, 240)[:, None]
    photo = np.rint((0.95 * (1 - ink) + 0.15 * ink) * light * 255).astype(np.uint8)
    gray = to_gray_ink(photo)
    assert gray.dtype == np.float32 and gray.min() >= 0 and gray.max() <= 1
    far_from_digit = ndi.binary_dilation(ink > 0.05, iterations=10) == 0
    assert gray[far_from_digit].max() == 0  # the shadowed paper is all background
    assert h.iou(to_mnist(photo), to_mnist(h.on_paper(ink))) > 0.8


@pytest.mark.parametrize("seed", [831, 2732, 2936])
def test_a_digit_under_a_steep_shadow_is_found(mnist, seed):
    """Under a steep shadow the first Otsu guess takes much of the page for ink; the paper
    level is estimated again until the guess settles (these uploads, found by searching 3,000
    seeds, needed three passes and came back blank when two were made)."""
    from digitlab.synth import uploads as synth

    digit = mnist["train"].images[5]
    data = synth.render_ink(synth.ink_crop(digit), "shadow", np.random.default_rng(seed))
    p = prepare(load_image(data, max_side=512))
    assert not p.empty
    both = (p.image > 127) & (digit > 127)
    assert both.sum() / ((p.image > 127) | (digit > 127)).sum() > 0.8  # measured 0.90-0.93


def test_noisy_photo_keeps_stroke_grey_levels_and_zeroes_paper(digit_of, h):
    rng = np.random.default_rng(0)
    ink = h.place(h.enlarge(digit_of(9), 100), (150, 150), (25, 40))
    photo = h.on_paper(ink).astype(float) + rng.normal(0, 12, ink.shape)
    gray = to_gray_ink(np.clip(photo, 0, 255).astype(np.uint8))
    assert (gray == 0).mean() > 0.8
    edge = (ink > 0.15) & (ink < 0.6)
    assert 0.1 < np.median(gray[edge]) < 0.9  # anti-aliased edges stay grey
    assert np.median(gray[ink > 0.95]) == 1.0


def _grainy_page(seed: int, hairline: bool) -> np.ndarray:
    """Paper at grey 200 with grain of 20 grey levels, and maybe a 1-px "7" 105 levels darker
    (its median pixel stands 5.3 grain deviations above the paper)."""
    img = Image.new("L", (200, 200), 0)
    if hairline:
        ImageDraw.Draw(img).line([(60, 50), (140, 50), (90, 160)], fill=255, width=1)
    ink = np.asarray(img, float) / 255
    noise = np.random.default_rng(seed).normal(0, 20, ink.shape)
    return np.clip(200 - 105 * ink + noise, 0, 255).astype(np.uint8)


def test_a_hairline_on_grainy_paper_is_found_and_grain_alone_is_not(h):
    img = Image.new("L", (200, 200), 200)
    ImageDraw.Draw(img).line([(60, 50), (140, 50), (90, 160)], fill=95, width=1)
    clean = prepare(np.asarray(img)).image
    for seed in range(8):
        found = prepare(_grainy_page(seed, hairline=True))
        assert not found.empty and h.iou(found.image, clean) > 0.7  # measured 0.81-1.0
        assert prepare(_grainy_page(seed, hairline=False)).empty


def test_thin_pen_line_on_a_big_canvas_survives_scaling():
    img = Image.new("L", (1000, 1000), 255)
    ImageDraw.Draw(img).line([(300, 200), (700, 200), (420, 800)], fill=0, width=1)  # a "7"
    out = prepare(img)
    assert not out.empty and out.thickened
    assert (out.image > 127).sum() >= 30
    assert stroke_width(out.image > 127) >= 1.3
    without = prepare(img, thicken=False).image
    assert (without > 127).sum() < (out.image > 127).sum()


def test_small_digit_in_a_big_picture_is_read_at_full_resolution(digit_of, h):
    ink = h.enlarge(digit_of(3), 40)
    picture = h.on_paper(h.place(ink, (2000, 2000), (1500, 300)))
    out = prepare(Image.fromarray(picture))
    assert h.iou(out.image, to_mnist(h.on_paper(h.place(ink, (60, 60), (10, 10))))) > 0.8
    assert abs(out.box[0] - 300) <= 2 and abs(out.box[1] - 1500) <= 2


def test_specks_far_from_the_digit_are_ignored(digit_of, h):
    ink = h.place(h.enlarge(digit_of(1), 100), (200, 200), (50, 90))
    clean = to_mnist(h.on_paper(ink))
    for y, x in [(5, 5), (190, 10), (10, 180), (185, 185)]:
        ink[y : y + 3, x : x + 3] = 1
    dirty = prepare(h.on_paper(ink))
    assert h.iou(dirty.image, clean) > 0.95
    assert dirty.box[2] < 60  # the box holds the 1, not the corners


@pytest.mark.parametrize(
    "picture",
    [
        np.full((100, 80), 255, np.uint8),
        np.zeros((100, 80), np.uint8),
        np.full((100, 80), 128, np.uint8),
        np.clip(np.random.default_rng(1).normal(230, 4, (120, 90)), 0, 255).astype(np.uint8),
    ],
    ids=["white", "black", "grey", "paper-grain"],
)
def test_blank_pages_are_empty_not_errors(picture):
    out = prepare(picture)
    assert out.empty and out.image.shape == (28, 28) and not out.image.any()


def test_transparent_canvas_is_empty(h):
    data = h.encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG")
    assert prepare(load_image(data)).empty


@pytest.mark.parametrize(
    "size", [(1, 1), (2, 3), (20000, 10), (10, 20000)], ids=["1x1", "2x3", "strip", "column"]
)
def test_degenerate_shapes_give_an_answer(size):
    w, hgt = size
    img = Image.new("L", size, 255)
    ImageDraw.Draw(img).line([(w // 4, hgt // 2), (3 * w // 4, hgt // 2)], fill=0, width=3)
    out = prepare(img)
    assert out.image.shape == (28, 28) and out.image.dtype == np.uint8


def test_strip_with_a_dash_is_centred(h):
    img = Image.new("L", (20000, 10), 255)
    ImageDraw.Draw(img).rectangle((9000, 2, 11000, 7), fill=0)
    out = prepare(img)
    assert not out.empty and out.image[14].max() > 200
    assert 8500 <= out.box[0] <= 9100 and 1800 <= out.box[2] <= 2200


def test_arrays_are_accepted_as_pictures_or_as_ink(digit_of):
    d = digit_of(0)
    assert np.abs(to_mnist(d).astype(int) - to_mnist(d.astype(np.float32) / 255)).mean() < 1
    rgb = np.repeat((255 - d)[..., None], 3, axis=2)
    assert np.abs(to_mnist(rgb).astype(int) - to_mnist(d)).mean() < 2


def test_ink_fraction_measures_the_inked_share(h):
    img = np.full((100, 100), 255, np.uint8)
    img[20:80, 45:55] = 0  # a bar of 600 px in 10,000
    out = prepare(img)
    assert 0.04 < out.ink_fraction < 0.08


def test_28px_pngs_read_and_prepared_fast(test_digits, h):
    pngs = [h.encode(Image.fromarray(x), "PNG") for x in test_digits[0][:300]]
    start = time.perf_counter()
    for data in pngs:
        prepare(load_image(data))
    per_second = len(pngs) / (time.perf_counter() - start)
    assert per_second > 300  # ~1,400/s measured on an idle core; leave room for a busy CI box


def test_big_jpeg_photo_prepared_fast(digit_of, h):
    ink = h.place(h.enlarge(digit_of(2), 700), (1500, 2000), (400, 600))
    data = h.encode(Image.fromarray(h.on_paper(ink)).convert("RGB"), "JPEG", quality=90)
    best = min(_timed(lambda: prepare(load_image(data, max_side=512))) for _ in range(5))
    assert best < 0.1  # ~15 ms measured on an idle core


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_a_lone_pixel_is_no_ink_and_one_stroke_is_kept_whole():
    mask = np.zeros((28, 28), bool)
    mask[10, 10] = True
    assert main_ink(mask) is None  # a speck alone is not a digit
    mask[11, 11] = True  # its diagonal neighbour: one 8-connected stroke
    kept = main_ink(mask)
    assert kept is not mask and np.array_equal(kept, mask)
    tiny = np.zeros((2, 2), bool)
    tiny[0, 0] = True  # an image of four pixels keeps even one
    assert np.array_equal(main_ink(tiny), tiny)
