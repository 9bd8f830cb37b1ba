"""unzoomed: a digit zoomed in block by block (nearest neighbour) reads as if zoomed smoothly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitlab.inputs import digit_input
from digitlab.predict import Predictor
from digitlab.preprocess import load_image, prepare, unzoomed


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _small_page(digit: np.ndarray, height: int, side: int) -> Image.Image:
    """An MNIST digit shrunk to about ``height`` px, dark on light paper ``side`` px square."""
    small = Image.fromarray(digit).resize((height, height), Image.Resampling.BOX)
    page = np.full((side, side), 240, np.uint8)
    top = (side - height) // 2
    page[top : top + height, top : top + height] -= (np.asarray(small) * 0.85).astype(np.uint8)
    return Image.fromarray(page)


def _zoom(img: Image.Image, k: int, method: Image.Resampling) -> bytes:
    return _png(img.resize((img.width * k, img.height * k), method))


@pytest.mark.parametrize("k", [3, 7, 12])
def test_a_blocky_zoom_is_read_as_the_smooth_zoom_of_the_same_pixels(test_digits, k):
    images, _ = test_digits
    for digit in images[:10]:
        page = _small_page(digit, 10, 16)
        blocky = digit_input(_zoom(page, k, Image.Resampling.NEAREST))
        smooth = digit_input(_zoom(page, k, Image.Resampling.BICUBIC))
        assert np.array_equal(blocky.image, smooth.image)
        assert blocky.box == smooth.box  # in the input's own pixels


def test_tiny_blocky_digits_are_read_not_rejected(test_digits):
    images, labels = test_digits
    pred = Predictor()
    rows = []
    for digit, label in zip(images[:60], labels[:60], strict=True):
        data = _zoom(_small_page(digit, 9, 14), 12, Image.Resampling.NEAREST)
        now = pred.verdicts(digit_input(data).image[None])[0]
        blocks = pred.verdicts(prepare(load_image(data, max_side=512)).image[None])[0]
        rows.append((now["digit"] == label, blocks["digit"] == label))
    now, then = np.mean(rows, axis=0)
    assert now >= 0.8 and now > then + 0.1


@pytest.mark.parametrize(
    "img",
    [
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400), np.uint8)),
        Image.new("L", (64, 64), 255),  # blank: no block edges at all
        Image.new("RGB", (1, 1)),
        Image.new("L", (70, 1)),
    ],
)
def test_images_that_are_no_blocky_zoom_come_back_as_they_are(img):
    assert unzoomed(img) is img


def test_a_zoom_of_fewer_than_eight_own_pixels_is_left_alone(test_digits):
    page = _small_page(test_digits[0][0], 5, 7)  # 7 px at its own pixels
    zoomed = load_image(_zoom(page, 10, Image.Resampling.NEAREST))
    assert unzoomed(zoomed) is zoomed


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize("k", [4, 9, 15])
def test_a_jpeg_of_a_blocky_zoom_is_read_as_a_smooth_zoom(test_digits, k):
    """JPEG's ringing breaks the blocks' one colour, but not where the changes fall."""
    images, labels = test_digits
    pred = Predictor()
    rows = []
    for digit, label in zip(images[:30], labels[:30], strict=True):
        page = _small_page(digit, 10, 16)
        blocky = _jpeg(page.resize((16 * k, 16 * k), Image.Resampling.NEAREST), 70)
        img = load_image(blocky)
        smooth = unzoomed(img)
        assert smooth is not img and smooth.size == img.size
        now = pred.verdicts(digit_input(blocky).image[None])[0]
        then = pred.verdicts(prepare(img).image[None])[0]
        rows.append((now["digit"] == label, then["digit"] == label))
    now, then = np.mean(rows, axis=0)
    assert now >= 0.8 and now >= then + 0.3  # measured 0.8-0.97 against 0.3-0.33


def test_jpeg_photos_and_smooth_zooms_are_no_block_zooms(test_digits):
    digit = test_digits[0][1]
    smooth = _small_page(digit, 10, 16).resize((160, 160), Image.Resampling.BICUBIC)
    noisy = np.asarray(_small_page(digit, 120, 200), np.float64)
    noisy = noisy + np.random.default_rng(3).normal(0, 6, noisy.shape)
    photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    for img in (smooth, photo):
        for quality in (50, 90):
            loaded = load_image(_jpeg(img, quality))
            assert unzoomed(loaded) is loaded
