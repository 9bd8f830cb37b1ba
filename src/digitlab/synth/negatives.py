"""Synthetic "not a digit" images in MNIST form, the eleventh class a rejecting model learns.

They are drawn straight into an ink map and put through the same normalisation as real
inputs (:func:`digitlab.preprocess.prepare`), so the model sees them exactly as it would see
a preprocessed upload of a shape, a scribble or a letter. The letters used here are disjoint
from those :mod:`digitlab.synth` renders for the benchmark, so the benchmark's letters are
never seen in training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Letters unlike any digit, disjoint from digitlab.synth.LETTERS (the benchmark's).
TRAIN_LETTERS = "ACEHKLMPTUVWXYaefkprvxy"
KINDS = ("ellipse", "ellipse", "rectangle", "triangle", "star", "cross", "scribble", "hatch",
         "blobs", "letter", "letter", "letters2")  # fmt: skip
# the kinds drawn with a pen (digitlab.synth.fonts redraws them in the handwriting pens)
SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross", "scribble", "hatch")
SIDE = 96


def negative_images(n: int, seed: int) -> np.ndarray:
    """``n`` MNIST-form (28x28 uint8) images that are not digits, deterministic in ``seed``."""
    from digitlab.preprocess import prepare

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    i = 0
    while i < n:
        ink = non_digit_ink(KINDS[i % len(KINDS)], rng)
        p = prepare(ink)
        if p.empty:
            continue
        out[i] = p.image
        i += 1
    return out


def non_digit_ink(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One non-digit of ``kind`` (:data:`KINDS`) as float ink in [0, 1], ``SIDE`` pixels square."""
    img = Image.new("L", (SIDE, SIDE), 0)
    d = ImageDraw.Draw(img)
    pen = int(rng.integers(3, 11))
    if kind == "ellipse":
        # circles and wide ellipses only: a tall oval is how people draw a 0 (with heights up
        # to 1.1x the width, augmentation stretched some past 1.3 and the mnist-vgg model
        # rejected a smooth 0 drawn on the page, 1.5x as tall as wide)
        w = rng.uniform(25, 70)
        h = w * rng.uniform(0.5, 0.95)
        x, y = rng.uniform(5, SIDE - 5 - w), rng.uniform(5, SIDE - 5 - h)
        d.ellipse((x, y, x + w, y + h), outline=255, width=pen)
    elif kind == "rectangle":
        x0, y0 = rng.uniform(5, 40, 2)
        x1, y1 = x0 + rng.uniform(25, 50), y0 + rng.uniform(25, 50)
        d.rectangle((x0, y0, x1, y1), outline=255, width=pen)
    elif kind == "triangle":
        while True:  # a sliver of a triangle is a "1": keep every angle above 30 degrees
            pts = rng.uniform(5, SIDE - 5, (3, 2))
            if _min_angle(pts) > np.radians(30) and _area(pts) > 900:
                break
        d.polygon([tuple(p) for p in pts], outline=255, width=pen)
    elif kind == "star":
        c, r = SIDE / 2, rng.uniform(25, 45)
        k = int(rng.integers(5, 8))
        a0 = rng.uniform(0, np.pi)
        pts = []
        for j in range(2 * k):
            rr = r if j % 2 == 0 else r * rng.uniform(0.35, 0.55)
            a = a0 + j * np.pi / k
            pts.append((c + rr * np.cos(a), c + rr * np.sin(a)))
        d.polygon(pts, outline=255, width=max(2, pen // 2))
    elif kind == "cross":
        c = SIDE / 2
        r = rng.uniform(20, 40)
        a = rng.uniform(0, np.pi / 2)
        for t in (a, a + np.pi / 2 + rng.uniform(-0.3, 0.3)):
            dx, dy = r * np.cos(t), r * np.sin(t)
            d.line((c - dx, c - dy, c + dx, c + dy), fill=255, width=pen)
    elif kind == "scribble":
        pts = [tuple(rng.uniform(5, SIDE - 5, 2)) for _ in range(int(rng.integers(6, 14)))]
        d.line(pts, fill=255, width=pen, joint="curve")
    elif kind == "hatch":
        for _ in range(int(rng.integers(3, 7))):
            p0, p1 = rng.uniform(0, SIDE, 2), rng.uniform(0, SIDE, 2)
            d.line((*p0, *p1), fill=255, width=pen)
    elif kind == "blobs":
        from scipy import ndimage as ndi

        field = ndi.gaussian_filter(rng.standard_normal((SIDE, SIDE)), rng.uniform(3, 8))
        return (field > np.quantile(field, rng.uniform(0.8, 0.93))).astype(np.float32)
    else:
        text = "".join(
            TRAIN_LETTERS[int(rng.integers(len(TRAIN_LETTERS)))]
            for _ in range(1 if kind == "letter" else 2)
        )
        font = ImageFont.load_default(size=int(rng.uniform(40, 70) / len(text) ** 0.3))
        d.text((SIDE / 2, SIDE / 2), text, fill=255, font=font, anchor="mm",
               stroke_width=int(rng.integers(0, 3)), stroke_fill=255)  # fmt: skip
        img = img.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32) / 255.0


def _area(p: np.ndarray) -> float:
    (ax, ay), (bx, by) = p[1] - p[0], p[2] - p[0]
    return 0.5 * abs(float(ax * by - ay * bx))


def _min_angle(p: np.ndarray) -> float:
    angles = []
    for i in range(3):
        a, b = p[(i + 1) % 3] - p[i], p[(i + 2) % 3] - p[i]
        cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)
        angles.append(np.arccos(np.clip(cos, -1, 1)))
    return float(min(angles))
