"""Deterministic "realistic uploads" made from MNIST digits, for tests and benchmarks.

Each sample turns MNIST digits into what people actually send: dark ink on paper photographed
under uneven light, a small digit in a corner of a big canvas, blur, sensor noise, JPEG
artefacts, coloured ink, or strokes on a transparent browser canvas. Everything is drawn from
``numpy.random.default_rng(seed)``, so the same arguments give the same bytes. Feed it digits
you never tune on (the benchmark uses the MNIST test set).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SINGLE_KINDS = (
    "paper",  # dark ink on light paper, clean PNG
    "corner",  # a small digit somewhere in a big canvas
    "photo",  # uneven lighting, blur, noise, JPEG
    "shadow",  # a dark gradient across the page, JPEG
    "noisy",  # heavy sensor noise
    "color",  # coloured ink on tinted paper
    "canvas",  # RGBA: ink on a transparent background (browser canvas export)
    "thin",  # a thin pen on a large canvas
    "inverted",  # light ink on a dark board
)
NUMBER_KINDS = ("paper", "photo", "canvas", "touching")
NON_DIGIT_KINDS = (
    "blank_white",
    "blank_black",
    "blank_transparent",
    "noise",
    "circle",
    "rectangle",
    "triangle",
    "lines",
    "scribble",
    "letter",
)
# Letters that look like no digit (O, I, l, S, Z, g, q, b... do, so they are left out), and
# disjoint from digitlab.synth.negatives.TRAIN_LETTERS, the letters the bundled model learns to
# reject, so the benchmark measures rejection of letters it has never seen.
LETTERS = "BDFNRhmnuw"

Sample = tuple[bytes, str, str]


def realistic_single(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int
) -> list[tuple[bytes, int, str]]:
    """``n`` uploads of single digits: (PNG or JPEG bytes, label, kind), kinds in turn."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=n, replace=len(images) < n)
    return _singles(images[picks], labels[picks], rng)


def _singles(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> list[tuple[bytes, int, str]]:
    """One upload of each digit in turn, the kinds in turn."""
    out = []
    for i, (digit, label) in enumerate(zip(images, labels, strict=True)):
        kind = SINGLE_KINDS[i % len(SINGLE_KINDS)]
        out.append((render_ink(ink_crop(digit), kind, rng), int(label), kind))
    return out


UPLOAD_CHUNK = 250  # uploads per worker task


def prepared_uploads(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` realistic uploads of ``images`` (the kinds of :func:`realistic_single`) turned
    back into 28x28 uint8 by :func:`digitlab.preprocess.prepare`, exactly as ``predict`` reads
    a file, and their labels: what the model sees of users' images, to train and calibrate on.
    Where ``prepare`` finds no ink in an upload (about 1 in 300: a faint digit under a dark
    shadow), the digit itself stands in, so no blank image is ever labelled a digit.

    Rendering and reading back cost about 25 ms an upload, so chunks run in ``workers``
    processes (default: one per available core); the result depends on ``seed`` alone.
    """
    from digitlab.system import map_chunks

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=n, replace=len(images) < n)
    tasks = [
        (images[picks[i : i + UPLOAD_CHUNK]], labels[picks[i : i + UPLOAD_CHUNK]],
         int(rng.integers(2**62)))
        for i in range(0, n, UPLOAD_CHUNK)
    ]  # fmt: skip
    done = map_chunks(_prepared_chunk, tasks, workers)
    x = np.concatenate(done) if done else np.zeros((0, 28, 28), np.uint8)
    return x, labels[picks].astype(np.int64)


def _prepared_chunk(digits: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from digitlab.inputs import digit_input

    samples = _singles(digits, labels, np.random.default_rng(seed))
    read = [digit_input(data) for data, _, _ in samples]
    return np.stack([digit if r.empty else r.image for r, digit in zip(read, digits, strict=True)])


def realistic_numbers(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    seed: int,
    min_len: int = 2,
    max_len: int = 6,
) -> list[Sample]:
    """``n`` uploads of multi-digit numbers: (bytes, the digits as text e.g. "2026", kind).

    Digits sit side by side with natural spacing and slightly varied size and baseline; the
    ``touching`` kind pushes one neighbour in until its strokes overlap the previous digit's.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = NUMBER_KINDS[i % len(NUMBER_KINDS)]
        count = int(rng.integers(min_len, max_len + 1))
        idx = rng.choice(len(images), size=count, replace=False)
        height = int(rng.integers(40, 90))
        alpha = compose_digits(images[idx], height, kind == "touching", rng)
        render_kind = "paper" if kind == "touching" else kind
        margin = rng.uniform(1.15, 1.6, 2)
        canvas = (round(alpha.shape[1] * margin[0]), round(alpha.shape[0] * margin[1] * 1.3))
        text = "".join(str(int(labels[j])) for j in idx)
        out.append((render_ink(alpha, render_kind, rng, (0.6, 0.85), canvas), text, kind))
    return out


def non_digits(n: int, seed: int) -> list[tuple[bytes, str]]:
    """``n`` uploads with no digit in them: (bytes, kind) — blank pages, noise, shapes, letters.

    A circle or a rectangle can pass for a 0 and a line for a 1; a rejecting model should
    still be less sure of them than of real digits. Circles are round (height/width within
    0.8-1.25): a tall oval is how people write 0, so it is not a non-digit (:func:`ovals`).
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = NON_DIGIT_KINDS[i % len(NON_DIGIT_KINDS)]
        out.append((_non_digit(kind, rng), kind))
    return out


def ovals(n: int, seed: int) -> list[bytes]:
    """``n`` tall ellipses (height/width 1.4-4): a person reads them as 0, so they are
    neither counted as non-digits nor as digits; the benchmark reports what the model says."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(64, 401)), int(rng.integers(64, 401))
        img = Image.new("L", (w, h), 255)
        bh = int(h * rng.uniform(0.4, 0.8))
        bw = max(4, min(int(w * 0.8), round(bh / rng.uniform(1.4, 4.0))))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        pen = max(2, min(bw, bh) // int(rng.integers(6, 15)))
        ImageDraw.Draw(img).ellipse((x0, y0, x0 + bw, y0 + bh), outline=0, width=pen)
        out.append(encode_image(img, "PNG", 0))
    return out


# ------------------------------------------------------------------------------ rendering


def ink_crop(digit: np.ndarray) -> np.ndarray:
    """The 28×28 digit as float ink in [0, 1], cropped to its ink."""
    a = digit.astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return a
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def resize_ink(alpha: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Bicubic enlargement of a small ink crop, so strokes stay smooth, not pixelated."""
    h, w = alpha.shape
    width = width or max(1, round(w * height / h))
    img = Image.fromarray(alpha.astype(np.float32), "F")
    return np.clip(np.asarray(img.resize((width, height), Image.Resampling.BICUBIC)), 0, 1)


def compose_digits(
    digits: np.ndarray, height: int, touching: bool, rng: np.random.Generator
) -> np.ndarray:
    """Digits side by side on one ink strip, each scaled and shifted a little; with
    ``touching``, one random pair of neighbours touches."""
    touch_at = int(rng.integers(1, len(digits))) if touching and len(digits) > 1 else -1
    crops = []
    for d in digits:
        a = ink_crop(d)
        h = max(8, round(height * rng.uniform(0.85, 1.1)))
        crops.append((resize_ink(a, h), int(rng.integers(-height // 10, height // 10 + 1))))
    total_w = sum(c.shape[1] for c, _ in crops) + height * len(crops)
    strip = np.zeros((int(height * 1.6), total_w + 2 * height), np.float32)
    x = height // 2
    for i, (c, dy) in enumerate(crops):
        top = (strip.shape[0] - c.shape[0]) // 2 + dy
        if i == 0:
            left = x
        elif i == touch_at:
            left = max(_touching_left(strip, c, top, x), x - round(0.15 * height))
            _bridge(strip, c, top, left, max(2, height // 15))
        else:
            left = x + round(height * rng.uniform(0.05, 0.35))
        region = strip[top : top + c.shape[0], left : left + c.shape[1]]
        np.maximum(region, c, out=region)
        x = left + c.shape[1]
    rows, cols = np.flatnonzero(strip.any(axis=1)), np.flatnonzero(strip.any(axis=0))
    return strip[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _bridge(strip: np.ndarray, c: np.ndarray, top: int, left: int, pen: int) -> None:
    """Join ``c`` (about to be drawn at ``left``) to the ink on its left with a short
    horizontal stroke where they come closest, as a hurried writer does."""
    ink, new = strip[top : top + c.shape[0]] > 0.5, c > 0.5
    both = ink.any(axis=1) & new.any(axis=1)
    if not both.any():
        return
    right_edge = ink.shape[1] - 1 - np.argmax(ink[:, ::-1], axis=1)
    left_edge = left + np.argmax(new, axis=1)
    gap = np.where(both, left_edge - right_edge, np.iinfo(np.int64).max)
    r = int(np.argmin(gap))
    if gap[r] > 1:
        y0 = top + max(0, r - pen // 2)
        strip[y0 : y0 + pen, right_edge[r] : left_edge[r] + 1] = 1.0


def _touching_left(strip: np.ndarray, c: np.ndarray, top: int, x: int) -> int:
    """The left edge that makes ``c``'s strokes overlap the ink already drawn by ~1 px."""
    ink, new = strip[top : top + c.shape[0]] > 0.5, c > 0.5
    both = ink.any(axis=1) & new.any(axis=1)
    if not both.any():
        return x - 1
    right_edge = np.where(ink.any(axis=1), ink.shape[1] - 1 - np.argmax(ink[:, ::-1], axis=1), 0)
    left_edge = np.argmax(new, axis=1)
    return int(np.max(right_edge[both] - left_edge[both])) - 1


def render_ink(
    alpha: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    fill: tuple[float, float] = (0.25, 0.8),
    canvas: tuple[int, int] | None = None,
) -> bytes:
    """Put an ink crop on a canvas (random size unless given) and encode it as an upload."""
    side = int(rng.integers(64, 601))
    aspect = rng.uniform(0.7, 1.4)
    if kind == "corner":
        side, fill = int(rng.integers(300, 601)), (0.12, 0.25)
    if kind == "thin":
        side, fill = int(rng.integers(500, 1001)), (0.5, 0.8)
    cw, ch = canvas or (side, max(32, round(side * aspect)))
    side = max(cw, ch)
    scale = rng.uniform(*fill) * min(cw / alpha.shape[1], ch / alpha.shape[0])
    h, w = max(4, round(alpha.shape[0] * scale)), max(2, round(alpha.shape[1] * scale))
    ink = resize_ink(alpha, h, w)
    if kind == "thin":
        ink = _thin(ink, rng)
    top, left = int(rng.integers(0, ch - h + 1)), int(rng.integers(0, cw - w + 1))
    a = np.zeros((ch, cw), np.float32)
    a[top : top + h, left : left + w] = ink
    if kind == "canvas":
        return _canvas(a, rng)
    paper, inkc = _colours(kind, rng)
    light = _lighting(kind, ch, cw, rng)
    blur = {"photo": 1.5, "shadow": 1.0, "noisy": 0.8}.get(kind, 0.0) * min(1.0, side / 300)
    if blur:  # out-of-focus ink; the light field is smooth, so blurring it too changes nothing
        a = _blur(a, rng.uniform(0.3, 1.0) * blur)
    rgb = (paper * (1 - a[..., None]) + inkc * a[..., None]) * light[..., None]
    noise = {"photo": 0.03, "shadow": 0.02, "noisy": 0.08}.get(kind, 0.005)
    rgb = rgb + rng.normal(0, noise, rgb.shape).astype(np.float32)
    img = Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    if kind in ("paper", "inverted", "thin", "corner") and rng.random() < 0.5:
        img = img.convert("L")
    jpeg = kind in ("photo", "shadow", "noisy") or (kind == "color" and rng.random() < 0.5)
    return encode_image(img, "JPEG" if jpeg else "PNG", int(rng.integers(40, 91)))


def _thin(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shave a thick stroke down to a 1–3 px pen line along its centre.

    The centre is where the smoothed distance to the background peaks across the stroke (a
    1-D non-maximum suppression along rows or columns), which keeps the line connected.
    """
    from scipy import ndimage as ndi

    core = np.pad(ink > 0.5, 2)
    depth = ndi.gaussian_filter(ndi.distance_transform_edt(core), 2.0)[2:-2, 2:-2]
    p = np.pad(depth, 1)
    left, right, up, down = p[1:-1, :-2], p[1:-1, 2:], p[:-2, 1:-1], p[2:, 1:-1]
    across = ((depth > left) & (depth >= right)) | ((depth > up) & (depth >= down))
    ridge = core[2:-2, 2:-2] & (depth >= 0.25 * depth.max()) & across
    width = int(rng.integers(0, 2))
    if width:
        ridge = ndi.binary_dilation(ridge, iterations=width)
    return _blur(ridge.astype(np.float32), 0.6)


def _colours(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    paper = np.full(3, rng.uniform(0.8, 1.0), np.float32)
    ink = np.full(3, rng.uniform(0.0, 0.3), np.float32)
    if kind == "color":
        paper = np.clip(paper - rng.uniform(0, 0.15, 3), 0, 1).astype(np.float32)
        palette = [(0.1, 0.2, 0.8), (0.8, 0.1, 0.1), (0.1, 0.5, 0.1), (0.5, 0.1, 0.6)]
        ink = np.array(palette[rng.integers(len(palette))], np.float32)
    if kind == "inverted":
        paper, ink = np.full(3, rng.uniform(0.0, 0.25), np.float32), np.full(3, 0.9, np.float32)
    return paper, ink


def _lighting(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative light field: a linear gradient, plus a vignette for photos."""
    if kind not in ("photo", "shadow"):
        return np.ones((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) + 0.5
    depth = rng.uniform(0.2, 0.45) if kind == "shadow" else rng.uniform(0.05, 0.25)
    light = 1 - depth * np.clip(ramp, 0, 1)
    if kind == "photo":
        r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2
        light *= 1 - rng.uniform(0.05, 0.25) * r2
    return light.astype(np.float32)


def _canvas(a: np.ndarray, rng: np.random.Generator) -> bytes:
    """A browser-canvas export: coloured strokes on a fully transparent background."""
    colour = (0, 0, 0) if rng.random() < 0.6 else tuple(int(v) for v in rng.integers(0, 256, 3))
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.rint(a * 255).astype(np.uint8)
    return encode_image(Image.fromarray(rgba, "RGBA"), "PNG", 0)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(a, sigma) if sigma > 0 else a


def encode_image(img: Image.Image, fmt: str, quality: int) -> bytes:
    """The file bytes of ``img`` as JPEG at ``quality`` or as PNG (lossless, fast level)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:  # lossless whatever the level; level 1 is 4x faster to write than the default 6
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


# ------------------------------------------------------------------------------ non-digits


def _non_digit(kind: str, rng: np.random.Generator) -> bytes:
    w, h = int(rng.integers(64, 401)), int(rng.integers(64, 401))
    if kind == "blank_white":
        return encode_image(Image.new("L", (w, h), int(rng.integers(200, 256))), "PNG", 0)
    if kind == "blank_black":
        return encode_image(Image.new("L", (w, h), int(rng.integers(0, 40))), "PNG", 0)
    if kind == "blank_transparent":
        return encode_image(Image.new("RGBA", (w, h), (0, 0, 0, 0)), "PNG", 0)
    if kind == "noise":
        return encode_image(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)), "PNG", 0)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    pen = max(2, min(w, h) // int(rng.integers(12, 30)))
    box = _random_box(w, h, rng)
    if kind == "circle":
        draw.ellipse(_round_box(w, h, rng), outline=0, width=pen)
    elif kind == "rectangle":
        draw.rectangle(box, outline=0, width=pen)
    elif kind == "triangle":
        x0, y0, x1, y1 = box
        points = [(x0, y1), (x1, y1), (int(rng.integers(x0, x1 + 1)), y0)]
        draw.polygon(points, outline=0, width=pen)
    elif kind == "lines":
        for _ in range(int(rng.integers(3, 7))):
            draw.line([_point(w, h, rng), _point(w, h, rng)], fill=0, width=pen)
    elif kind == "scribble":
        points = [_point(w, h, rng) for _ in range(int(rng.integers(8, 16)))]
        draw.line(points, fill=0, width=pen, joint="curve")
    else:
        letter = LETTERS[int(rng.integers(len(LETTERS)))]
        font = ImageFont.load_default(size=int(min(w, h) * rng.uniform(0.4, 0.8)))
        draw.text((w / 2, h / 2), letter, fill=0, font=font, anchor="mm")
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return encode_image(img, "PNG", 0)


def _random_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    bw, bh = int(w * rng.uniform(0.3, 0.8)), int(h * rng.uniform(0.3, 0.8))
    x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
    return x0, y0, x0 + bw, y0 + bh


def _round_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box whose height/width lies in 0.8-1.25, for a circle drawn by hand or tool."""
    side = min(w, h) * rng.uniform(0.3, 0.8)
    bw, bh = int(side), int(min(h - 1, side * rng.uniform(0.8, 1.25)))
    x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
    return x0, y0, x0 + bw, y0 + bh


def _point(w: int, h: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, w)), int(rng.integers(0, h))
