"""An upload as the models see it: the one place that decides how an image file's bytes
become a single digit's 28x28 or a line for the number reader.

``predict`` reads users' files with these functions, and the training data that imitates
users' files (digitlab.synth, the line model's numbers, calibration's uploads) is read back
with the same ones, so a change here changes both and they never drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digitlab.preprocess import MAX_PIXELS, Prepared, load_image, prepare, unzoomed

if TYPE_CHECKING:
    from PIL import Image

DIGIT_SIDE = 512  # a single digit is decoded at most this large: finer detail is lost at 28 px
LINE_SIDE = 1024  # a number is wide: twice the room


def digit_input(data: bytes, max_pixels: int = MAX_PIXELS) -> Prepared:
    """A single digit's upload in MNIST form (DigitlabError when it cannot be decoded,
    ImageTooLarge over ``max_pixels``)."""
    return prepare(unzoomed(load_image(data, max_pixels=max_pixels, max_side=DIGIT_SIDE)))


def line_input(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A number's upload decoded for :func:`digitlab.numbers.read_number`."""
    return load_image(data, max_pixels=max_pixels, max_side=LINE_SIDE)
