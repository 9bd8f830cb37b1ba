"""Any picture of a digit → the 28×28 image MNIST models expect.

MNIST digits are white ink on black, the ink's bounding box scaled (aspect kept, anti-aliased)
so its longest side is 20 px, then placed in 28×28 with the centre of mass at the centre. A
photo, a scan or a browser-canvas export is none of that, so every input goes the same way:

    load_image   bytes / path / file → PIL image (any format and mode, EXIF orientation, no bombs)
    to_gray_ink  → float ink map, 1 = ink, 0 = background, polarity and uneven lighting removed
    to_mnist     → 28×28 uint8: specks dropped, cropped, thickened if strokes would vanish,
                   scaled to 20 px, centred by centre of mass

The heavy work runs on a copy at most ``WORK_SIDE`` px long (JPEGs are decoded straight at a
reduced size), so a 12-megapixel photo costs about as much as a 512 px one; a small digit in a
big picture is then re-read from the full-resolution crop.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage as ndi

from digitlab.errors import DigitlabError
from digitlab.fileio import read_bounded, read_regular

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO

WORK_SIDE = 512  # longest side the ink is located at; MNIST needs only 20 px of it
REFINE_BELOW = 64  # a digit shorter than this at work scale is re-read at full resolution
BOX_SIDE = 20  # MNIST: the ink's bounding box is scaled so its longest side is 20 px
CENTRE = 14.0  # MNIST's centre of mass, in index coordinates (measured: 13.99, 14.00)
GIVE = "give a PNG, JPEG, BMP, GIF, TIFF or WebP"  # what an unreadable input's error asks for
MIN_STROKE = 1.3  # px at 28×28 (a 1-px line reads 1.27); only 0.7 % of MNIST is thinner
TARGET_STROKE = 2.5  # thinner strokes are dilated to about MNIST's median width
MIN_CONTRAST = 0.08  # ink fainter than this (fraction of full scale) is paper texture
NOISE_SIGMAS = 4.0  # ink must stand this many noise standard deviations above the paper
CORE_SIGMAS = 5.0  # ...and its typical (median) pixel this many: grain alone stays blank
# (its few pixels over the threshold sit just above it), a hairline on grain no longer does
FAINT = 0.1  # the box is that of ink above this level: JPEG ringing is fainter
SAMPLE = 16384  # statistics (medians, Otsu) are taken on about this many pixels
LIGHT_PASSES = 4  # at most this many paper-level estimates, each excluding the last guess's ink
SOLID = 0.25  # ...but not what fills a square this share of the page's short side: light
SETTLED = 0.002  # ...stopping once the ink mask changes on less than this share of the pixels
MAX_PIXELS = 50_000_000  # the default pixel limit of one image (a deployment may set its own)
MAX_IMAGE_BYTES = 256 * 1024 * 1024  # an uncompressed 50-Mpx RGBA TIFF is 200 MB
# what is decoded: not EPS (it runs Ghostscript, which can loop forever) nor Pillow's rarer
# decoders; AVIF only where this Pillow has it
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "AVIF")
READY_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I", "F"}  # _planes reads them as is
ORIENTATION = 0x0112  # the EXIF tag
EIGHT = np.ones((3, 3), bool)  # 8-connected components


@dataclass
class Prepared:
    """A digit ready for a model, and where it came from.

    ``box`` is (x, y, w, h) of the ink in the input's own pixels; ``ink_fraction`` is the share
    of the input's area that is ink; ``empty`` is true when no ink was found (``image`` is then
    all zero); ``thickened`` is true when thin strokes were dilated so they survive scaling.
    """

    image: np.ndarray
    box: tuple[int, int, int, int]
    ink_fraction: float
    empty: bool
    thickened: bool = False


@dataclass
class InkMap:
    """Ink (float32, 1 = ink, 0 = background) at work scale; ``scale`` is input px per ink px."""

    ink: np.ndarray
    scale: float


# --------------------------------------------------------------------------------- loading


def load_image(
    source: ImageSource, *, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode the first frame of an image, upright, refusing decompression bombs.

    A path is read only if it is a regular file of at most ``MAX_IMAGE_BYTES``
    (:func:`digitlab.fileio.read_regular`); only the formats in ``FORMATS`` are decoded.
    ``max_side`` lets a JPEG be decoded at 1/2, 1/4 or 1/8 size when only that many pixels are
    needed; the factor is kept in ``image.info["digitlab_scale"]`` and the input's own size in
    ``image.info["digitlab_size"]``, so boxes map back. The image comes back in a mode Pillow
    converts to L and RGB (a LAB TIFF keeps its lightness); an oversize image raises
    :class:`ImageTooLarge`.
    """
    data, name = _read_source(source)
    if not data:
        raise DigitlabError(_about(name, f"the file is empty; {GIVE}"))
    max_pixels = min(max_pixels, _pillow_bomb_limit())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on odd but readable files (EXIF, palette)
        try:
            img = Image.open(io.BytesIO(data), formats=_decoders())
        except Image.DecompressionBombError as exc:
            raise _bomb(name, max_pixels) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DigitlabError(_about(name, f"not an image Pillow can read; {GIVE}")) from exc
        width, height = img.size
        if width * height > max_pixels:
            raise _bomb(name, max_pixels, img.size)
        if width < 1 or height < 1:
            raise DigitlabError(_about(name, f"the image has no pixels ({width}x{height})"))
        if max_side and img.format == "JPEG" and max(width, height) > max_side:
            f = max_side / 2 / max(width, height)  # libjpeg then picks a size in [side/2, side)
            img.draft(img.mode, (math.ceil(width * f), math.ceil(height * f)))
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            raise _bomb(name, max_pixels) from exc
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a damaged file
            raise DigitlabError(
                _about(name, f"the {img.format or 'image'} file is damaged or truncated ({exc})")
            ) from exc
        scale, fmt, size = width / img.size[0], img.format, (width, height)
        with contextlib.suppress(Exception):  # a broken EXIF block only loses the orientation
            orientation = _orientation(img)
            if orientation in (5, 6, 7, 8):  # a quarter turn
                size = (height, width)
            if orientation != 1:  # (exif_transpose copies even an upright image)
                img = ImageOps.exif_transpose(img)
        img = _convertible(img)
        img.format = fmt
    img.info["digitlab_scale"] = scale
    img.info["digitlab_size"] = size
    return img


# where Pillow's getexif finds an orientation (TIFFs: in their tags)
EXIF_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 when upright. Pillow's getexif builds an EXIF object even for
    a file that has none, at a cost a folder of small PNGs feels; a file with none of the
    blocks it reads is upright without asking."""
    if not hasattr(img, "tag_v2") and not any(k in img.info for k in EXIF_SOURCES):
        return 1
    return img.getexif().get(ORIENTATION, 1)


UNZOOM_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")  # the modes Image.reduce takes
UNZOOM_MIN_SIDE = 8  # px: an image smaller than this at its own pixels is left as it is
# a JPEG is a block zoom when this share of its changes, beyond the 1/k that fall on the
# edges of k-px blocks in any picture, falls there (chosen in docs/other-hands-training.md)
JPEG_EDGES = 0.3


def unzoomed(img: Image.Image) -> Image.Image:
    """``img`` zoomed smoothly when it is a whole-number nearest-neighbour enlargement (a
    thumbnail or a screenshot zoomed in, every k×k block one colour); else ``img`` itself.

    Put in MNIST form, such a digit's blocks reach the model as staircases, which it takes
    for a shape: 8-10 px digits in held-out hands, zoomed that way, were 58% rejected, and
    the same digits zoomed smoothly 14% (docs/other-hands.md). So the image is shrunk to its
    own pixels and enlarged again by the same factor, bicubic, at the same size: boxes
    still map to the input's pixels. A JPEG of such a zoom keeps its blocks only roughly,
    and is found by where its changes fall (:func:`_jpeg_zoom_factor`).
    """
    k = _zoom_factor(img)
    if k < 2:
        return img
    small = img.reduce(k)
    smooth = small.resize((small.width * k, small.height * k), Image.Resampling.BICUBIC)
    smooth = smooth.crop((0, 0, *img.size))
    smooth.info, smooth.format = dict(img.info), img.format
    return smooth


def _zoom_factor(img: Image.Image) -> int:
    """The k of an image made of k×k blocks from its top left corner (one colour each, or
    roughly so in a JPEG), else 1."""
    if img.mode not in UNZOOM_MODES:
        return 1
    k = _exact_zoom_factor(img)
    return _jpeg_zoom_factor(img) if k < 2 and img.format == "JPEG" else k


def _exact_zoom_factor(img: Image.Image) -> int:
    """The k of an image made of k×k one-colour blocks from its top left corner, else 1."""
    w, h = img.size
    if min(w, h) < 2 * UNZOOM_MIN_SIDE:
        return 1
    # the middle row and column first: a photo or a scan changes at almost every pixel
    a = np.asarray(img) if w * h <= 1 << 16 else None  # a small image is cheaper whole
    row = a[h // 2] if a is not None else np.asarray(img.crop((0, h // 2, w, h // 2 + 1)))[0]
    col = a[:, w // 2] if a is not None else np.asarray(img.crop((w // 2, 0, w // 2 + 1, h)))[:, 0]
    if math.gcd(_steps(row), _steps(col)) < 2:
        return 1
    a = np.asarray(img) if a is None else a
    k = math.gcd(_steps(a), _steps(a.swapaxes(0, 1)))
    return k if k >= 2 and min(w, h) // k >= UNZOOM_MIN_SIDE else 1


def _jpeg_zoom_factor(img: Image.Image) -> int:
    """The k of a JPEG of a k×k block zoom (k >= 3), whose blocks JPEG no longer keeps exact,
    else 1: in rows and in columns, ``JPEG_EDGES`` of its changes beyond chance fall between
    blocks (the largest such share decides)."""
    a = gray8(img).astype(np.float32)
    h, w = a.shape
    if min(w, h) < 3 * UNZOOM_MIN_SIDE:
        return 1
    cols = np.abs(np.diff(a, axis=1)).sum(axis=0)  # the change from column j to j + 1
    rows = np.abs(np.diff(a, axis=0)).sum(axis=1)
    best, found = JPEG_EDGES, 1
    for k in range(3, min(w, h) // UNZOOM_MIN_SIDE + 1):
        share = min(_edge_share(cols, k), _edge_share(rows, k))
        excess = (share - 1 / k) / (1 - 1 / k)
        if excess >= best:
            best, found = excess, k
    return found


def _edge_share(changes: np.ndarray, k: int) -> float:
    """The share of ``changes`` (from each pixel to the next) that falls between k-px blocks."""
    return float(changes[k - 1 :: k].sum()) / max(float(changes.sum()), 1e-6)


def _steps(a: np.ndarray) -> int:
    """The gcd of the positions along the first axis where ``a`` changes (0: it never does)."""
    if len(a) < 2:
        return 0
    changed = a[1:] != a[:-1]
    if changed.ndim > 1:
        changed = changed.reshape(len(a) - 1, -1).any(axis=1)
    at = np.flatnonzero(changed)
    return int(np.gcd.reduce(at + 1)) if at.size else 0


class ImageTooLarge(DigitlabError):
    """An image with more pixels than the limit (a decompression bomb or a huge scan)."""


def _read_source(source: ImageSource) -> tuple[bytes, str]:
    """The bytes of ``source``, and how its errors name it: "" for bytes, whose caller
    names them (a CLI line starts with the path, a server answer with the item)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), ""
    if isinstance(source, str | os.PathLike):
        return read_regular(source, MAX_IMAGE_BYTES, what="image"), str(source)
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "image"))
        return read_bounded(source, MAX_IMAGE_BYTES, name=name, what="image"), name
    raise DigitlabError(f"cannot read an image from a {type(source).__name__}")


def _about(name: str, text: str) -> str:
    return f"{name}: {text}" if name else text


@functools.cache
def _decoders() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def _pillow_bomb_limit() -> float:
    """Pillow refuses images over twice its MAX_IMAGE_PIXELS itself, whatever we allow."""
    limit = Image.MAX_IMAGE_PIXELS
    return 2 * limit if limit else math.inf


def _convertible(img: Image.Image) -> Image.Image:
    """The image in a mode that converts to L and RGB; others (LAB, HSV, YCbCr, CMYK...) are
    converted here, LAB to its lightness (Pillow cannot convert LAB to L)."""
    if img.mode in READY_MODES or img.mode.startswith("I;16"):
        return img
    if img.mode == "LAB":
        return img.getchannel("L")
    try:
        return img.convert("RGBA" if "A" in img.mode or "a" in img.mode else "RGB")
    except ValueError as exc:
        raise DigitlabError(f"image mode {img.mode} is not supported; save it as RGB") from exc


def input_size(img: Image.Image | np.ndarray) -> tuple[int, int]:
    """(w, h) of the input in its own pixels, before any reduced decoding."""
    if isinstance(img, Image.Image):
        scale = float(img.info.get("digitlab_scale", 1.0))
        fallback = (round(img.size[0] * scale), round(img.size[1] * scale))
        return tuple(img.info.get("digitlab_size", fallback))
    return img.shape[1], img.shape[0]


def _bomb(name: str, max_pixels: float, size: tuple[int, int] | None = None) -> ImageTooLarge:
    declared = f" declares {size[0]}x{size[1]} pixels and" if size else ""
    return ImageTooLarge(
        f"{name or 'the image'}{declared} is larger than the {int(max_pixels):,}-pixel limit "
        "(a decompression bomb or a huge scan); resize it first"
    )


def clip_box(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An (x, y, w, h) box cut to an image of ``size`` (w, h), at least 1x1: boxes scaled up
    from a reduced copy can reach a few pixels past the input's edge."""
    x, y, w, h = box
    x0, y0 = min(max(x, 0), size[0] - 1), min(max(y, 0), size[1] - 1)
    x1, y1 = min(max(x + w, x0 + 1), size[0]), min(max(y + h, y0 + 1), size[1])
    return x0, y0, x1 - x0, y1 - y0


# ----------------------------------------------------------------------------- ink location


def to_gray_ink(img: Image.Image | np.ndarray) -> np.ndarray:
    """The ink of a picture at its own size: float32 (H, W) in [0, 1], 1 = ink, 0 = background.

    Works for dark ink on light paper and light ink on dark alike, for coloured ink, for
    strokes on a transparent canvas, and under uneven lighting; background pixels are exactly 0.
    """
    planes, alpha = _planes(_as_image(img))
    return _ink_from_planes(planes, alpha)


def ink_map(img: Image.Image | np.ndarray, max_side: int = WORK_SIDE) -> InkMap:
    """The ink at a working size of at most ``max_side`` px, for locating and segmenting."""
    if isinstance(img, np.ndarray) and np.issubdtype(img.dtype, np.floating):
        return InkMap(np.clip(np.nan_to_num(img.astype(np.float32)), 0, 1), 1.0)
    pil = _as_image(img)
    scale = float(pil.info.get("digitlab_scale", 1.0))
    factor = math.ceil(max(pil.size) / max_side)
    planes, alpha = _planes(pil, factor)
    return InkMap(_ink_from_planes(planes, alpha), scale * factor)


def _as_image(img: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        return Image.fromarray(arr, "RGB" if arr.shape[2] == 3 else "RGBA")
    if arr.ndim != 2 or arr.size == 0:
        raise DigitlabError(f"expected a 2-D grey or (H,W,3|4) colour image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        return Image.fromarray(arr.astype(np.float32), "F")
    if arr.dtype == np.uint8:
        return Image.fromarray(arr, "L")
    return Image.fromarray(arr.astype(np.int32), "I")


def _planes(img: Image.Image, reduce: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour planes (H, W, C) float32 in [0, 1] and alpha (H, W) or None, reduced by a factor."""
    mode = img.mode
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode.startswith("I;16"):
        img = img.convert("I")
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
    if reduce > 1:
        img = img.reduce((min(reduce, img.size[0]), min(reduce, img.size[1])))
    arr = np.asarray(img, dtype=np.float32)
    if img.mode in ("I", "F"):
        return _full_scale(arr, integer=img.mode == "I")[..., None], None
    arr = arr / 255.0
    if arr.ndim == 2:
        return arr[..., None], None
    if img.mode in ("LA", "RGBA"):
        return arr[..., :-1], arr[..., -1]
    return arr, None


def gray8(img: Image.Image) -> np.ndarray:
    """The grey levels of an image as uint8, deep and float data scaled as :func:`_planes`
    scales them (Pillow's own conversion clips a 12-bit or a 0-1 float image)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img.convert("I") if img.mode.startswith("I;16") else img, np.float32)
        return np.rint(np.clip(_full_scale(arr, img.mode != "F"), 0, 1) * 255).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _full_scale(arr: np.ndarray, integer: bool) -> np.ndarray:
    """Grey levels of a 16/32-bit or float image in [0, 1], scaled by the range they come from.

    Integer data is scaled by the bit depth its largest value needs among 1, 8, 10, 12, 14
    and 16 bits (a 10- or 12-bit scan in a 16-bit PNG would otherwise read as a blank 1/64 or
    1/16 of full scale); float data by 1, 255 or 65535. A NaN or infinite pixel is one bad
    pixel, not a reason to blank the image: infinities take the finite extremes, NaN the
    finite median (most pixels are paper), and the range is that of the finite pixels.
    """
    finite = np.isfinite(arr)
    if not finite.all():
        good = arr[finite]
        if good.size == 0:
            return np.zeros(arr.shape, np.float32)
        paper = float(median(good[:: max(1, good.size // SAMPLE)]))
        arr = np.nan_to_num(arr, nan=paper, posinf=float(good.max()), neginf=float(good.min()))
    peak, low = float(arr.max()), min(0.0, float(arr.min()))
    depths = (1.0, 255.0, 1023.0, 4095.0, 16383.0, 65535.0) if integer else (1.0, 255.0, 65535.0)
    top = next((d for d in depths if peak <= d), peak)
    return (arr - low) / max(top - low, 1e-6)


def _ink_from_planes(planes: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is not None:
        if median(_border(alpha)) < 0.5:  # strokes on a transparent canvas: alpha is the ink
            return _clean_alpha(alpha)
        paper = median(_border(planes), axis=0)
        planes = planes * alpha[..., None] + paper * (1 - alpha[..., None])
    signal = _ink_signal(planes)
    if signal is None:
        return np.zeros(planes.shape[:2], np.float32)
    return _separate_ink(*signal)


def _border(a: np.ndarray) -> np.ndarray:
    """The outer ring of pixels (2 % of the short side, at least 1 px), flattened to (N, ...):
    corners twice, in no particular order (its users take medians and ranges)."""
    b = max(1, round(0.02 * min(a.shape[:2])))
    rest = a.shape[2:]
    sides = (a[:b], a[-b:], a[:, :b], a[:, -b:])
    return np.concatenate([side.reshape(-1, *rest) for side in sides], axis=0)


def _clean_alpha(alpha: np.ndarray) -> np.ndarray:
    peak = float(alpha.max())
    if peak < MIN_CONTRAST:
        return np.zeros_like(alpha)
    hi = float(median(alpha[alpha > 0.5 * peak]))  # stroke cores saturate, as in MNIST
    return np.clip(alpha / hi, 0, 1).astype(np.float32)


def _ink_signal(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Project every pixel onto the paper→ink colour direction: 0 = paper, > 0 = towards ink.

    The paper colour is the border's median; the ink colour is the mean of the 0.5 % of pixels
    farthest from it. This settles polarity (dark-on-light or light-on-dark) and makes yellow
    or red ink as visible as black. Dark ink also returns the brightness, whose local level
    tells how much a shadow has dimmed the ink's contrast.
    """
    if planes.shape[2] == 1:  # grey: the same figures as below with one colour, at a third the cost
        grey = planes[..., 0]
        return _grey_signal(grey - median(_border(grey)), grey)
    paper = median(_border(planes), axis=0)
    diff = planes - paper
    far = _farthest(np.einsum("hwc,hwc->hw", diff, diff))
    if not far.any():
        return None
    direction = diff[far].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm < MIN_CONTRAST / 2:
        return None
    # the mean of the three colours, as np.mean gives it, at a tenth of its cost on this axis
    brightness = (
        (planes[..., 0] + planes[..., 1] + planes[..., 2]) / 3 if direction.sum() < 0 else None
    )
    return diff @ (direction / norm), brightness


def _grey_signal(diff: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """:func:`_ink_signal` of one plane: the ink direction is darker or lighter than paper."""
    far = _farthest(diff * diff)
    if not far.any():
        return None
    ink = diff[far]
    direction = float(np.add.reduce(ink) / ink.size)  # .mean(), without its wrapper
    if abs(direction) < MIN_CONTRAST / 2:
        return None
    return (diff, None) if direction > 0 else (-diff, grey)


def _farthest(dist2: np.ndarray) -> np.ndarray:
    """The 0.5 % of pixels farthest from the paper colour (every pixel off it, if fewer)."""
    sample = dist2.ravel()[:: max(1, dist2.size // SAMPLE)]
    cut = np.partition(sample, int(0.995 * (sample.size - 1)))[int(0.995 * (sample.size - 1))]
    return dist2 >= cut if cut > 0 else dist2 > 0


def _separate_ink(x: np.ndarray, brightness: np.ndarray | None = None) -> np.ndarray:
    """Flatten the lighting, find the ink, keep its grey levels and zero the paper.

    The paper level is a heavy Gaussian of the non-ink pixels (normalised convolution on a
    coarse grid), estimated again without each guess's ink until the guess settles. Under a
    steep shadow the first Otsu guess takes half the page for ink; a stroke is thin, so what
    the guess holds in a solid square of ``SOLID`` of the page's side is light, and stays in
    the paper's level (docs/other-hands-training.md).
    Light is multiplicative, so under a shadow dark ink also loses contrast: that is given
    back by the ratio of the border's paper brightness to the local one. The ink is what
    stands above both Otsu's threshold and ``NOISE_SIGMAS`` noise deviations.
    """
    step = max(1, x.size // SAMPLE)  # statistics come from a strided sample of big images
    border = _border(x)
    if border.max() - border.min() < MIN_CONTRAST:  # clean paper all round: nothing to flatten
        flat, sigma = x, _mad_sigma(border)
        threshold = max(_otsu(flat), NOISE_SIGMAS * sigma, MIN_CONTRAST / 2)
        mask = flat > threshold
    else:
        mask = x > _otsu(x)
        for passes in range(1, LIGHT_PASSES + 1):
            strokes = mask & ~_solid(mask)  # what is left out of the paper's level
            if brightness is None:
                flat = x - _paper_levels(strokes, x)[0]
            else:
                level, local = _paper_levels(strokes, x, brightness)
                flat = x - level
                flat *= np.clip(median(_border(brightness)) / np.maximum(local, 1e-3), 0.25, 4)
            f, m = flat.ravel()[::step], mask.ravel()[::step]
            sigma = _mad_sigma(f[~m] if (~m).any() else f)
            threshold = max(_otsu(flat), NOISE_SIGMAS * sigma, MIN_CONTRAST / 2)
            guess, mask = mask, flat > threshold
            if passes >= 2 and np.count_nonzero(guess != mask) <= SETTLED * mask.size:
                break
    if not mask.any():
        return np.zeros(x.shape, np.float32)
    core = flat.ravel()[::step][mask.ravel()[::step]]
    hi = float(median(core if core.size else flat[mask]))  # MNIST: 56 % of strokes are ≥250
    if hi < max(MIN_CONTRAST, CORE_SIGMAS * sigma):
        return np.zeros(x.shape, np.float32)
    lo = min(0.5 * threshold, 3.0 * sigma)
    ink = np.minimum(np.maximum((flat - lo) / max(hi - lo, 1e-6), 0), 1)  # np.clip, less overhead
    near = grow(mask)
    return (ink * near).astype(np.float32)


def _solid(mask: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` that a square of ``SOLID`` of the short side fits inside (a
    morphological opening, on the coarse grid of the paper's level): a shadow, not a stroke."""
    h, w = mask.shape
    k = _grid_step(mask.shape)
    cells = (_block_sum(mask.astype(np.float32), k) >= 0.5 * k * k).view(np.uint8)
    side = max(2, round(SOLID * min(cells.shape)))
    inside = ndi.minimum_filter1d(ndi.minimum_filter1d(cells, side, axis=0), side, axis=1)
    solid = ndi.maximum_filter1d(ndi.maximum_filter1d(inside, side, axis=0), side, axis=1)
    return np.repeat(np.repeat(solid.view(bool), k, axis=0), k, axis=1)[:h, :w]


def _mad_sigma(v: np.ndarray) -> float:
    """The noise's standard deviation, robustly: 1.4826 × the median absolute deviation."""
    return 1.4826 * float(median(np.abs(v - median(v))))


def median(v: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.median`` of a 1-D float array (or of each column, ``axis=0``): the same value, NaN
    included, without its per-call overhead (a 28x28 digit takes five medians; numpy's own
    cost more than the rest of its ink finding). A full sort, not a partition: numpy's
    partition on the three places needed took 3-4x as long, from 784 to 10^6 values."""
    if v.dtype.kind != "f" or v.size == 0 or (axis is None and v.ndim != 1):
        return np.median(v, axis=axis)
    n = v.shape[0]
    k = n // 2
    part = np.sort(v, axis=0)
    mid = part[k] if n % 2 else (part[k - 1] + part[k]) / 2
    nan = np.isnan(part[-1])  # sort puts NaN last; numpy's median is then NaN
    return np.where(nan, np.nan, mid).astype(v.dtype)[()] if nan.any() else mid


def grow(mask: np.ndarray) -> np.ndarray:
    """A boolean mask grown by 2 px each way: ``ndi.maximum_filter(mask, size=5) > 0``, pixel
    for pixel, as ors of shifted slices of a padded copy: scipy's filter costs more per call
    on a small digit and per pixel on a large page."""
    h, w = mask.shape
    pad = np.zeros((h + 4, w + 4), bool)
    pad[2:-2, 2:-2] = mask
    rows = pad[:-4] | pad[1:-3] | pad[2:-2] | pad[3:-1] | pad[4:]
    return rows[:, :-4] | rows[:, 1:-3] | rows[:, 2:-2] | rows[:, 3:-1] | rows[:, 4:]


def _paper_levels(ink: np.ndarray, *planes: np.ndarray) -> list[np.ndarray]:
    """The paper's level in each of ``planes`` where ``ink`` is not: their paper pixels
    smoothed by a normalised Gaussian convolution on a coarse grid (one weight map for all)."""
    h, w = ink.shape
    k = _grid_step(ink.shape)
    keep = (~grow(ink)).astype(np.float32)
    sums = np.stack([_block_sum(keep, k)] + [_block_sum(x * keep, k) for x in planes])
    sigma = max(1.0, max(sums.shape[1:]) / 6)
    # one call smooths every plane (the same floats as one call each, in half the time)
    den, *nums = ndi.gaussian_filter(sums, (0, sigma, sigma), mode="nearest")
    empty = den <= 1e-3 * k * k  # no paper anywhere near: use the paper's overall level
    levels = []
    for x, num in zip(planes, nums, strict=True):
        coarse = num / np.maximum(den, 1e-12)
        if empty.any():
            step = max(1, x.size // SAMPLE)
            paper = x.ravel()[::step][keep.ravel()[::step] > 0]
            coarse[empty] = float(median(paper)) if paper.size else float(median(x.ravel()))
        if k == 1:
            levels.append(coarse.astype(np.float32))
            continue
        up = Image.fromarray(coarse.astype(np.float32), "F").resize(
            (coarse.shape[1] * k, coarse.shape[0] * k), Image.Resampling.BILINEAR
        )
        levels.append(np.asarray(up)[:h, :w])
    return levels


def _grid_step(shape: tuple[int, ...]) -> int:
    """Pixels per cell of the coarse grid that light is modelled on (at most 48 cells a side:
    light changes slowly, and the Gaussian costs little there)."""
    return max(1, math.ceil(max(shape[:2]) / 48))


def _block_sum(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape
    ph, pw = -h % k, -w % k
    a = np.pad(a, ((0, ph), (0, pw)), mode="edge") if ph or pw else a
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).sum(axis=(1, 3))


def _otsu(x: np.ndarray) -> float:
    """Otsu's threshold over a 256-bin histogram of ``x`` (a subsample of big arrays)."""
    v = x.ravel()[:: max(1, x.size // SAMPLE)]
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-6:
        return hi
    hist = np.bincount(((v - lo) * (255.999 / (hi - lo))).astype(np.intp), minlength=257)
    hist[255] += hist[256:].sum()  # a guard: the top value belongs to bin 255 however it rounds
    w0 = hist[:256].cumsum(dtype=np.float64)
    m0 = (hist[:256] * LEVELS).cumsum()
    total, mean = w0[-1], m0[-1]
    between = (mean * w0 - total * m0) ** 2 / np.maximum(w0 * (total - w0), 1e-12)
    return lo + (int(between[:-1].argmax()) + 1) * (hi - lo) / 256


LEVELS = np.arange(256, dtype=np.float64)  # the histogram's bins


# ------------------------------------------------------------------------------- MNIST form


def to_mnist(img: Image.Image | np.ndarray, *, thicken: bool = True) -> np.ndarray:
    """The 28×28 uint8 MNIST-style image of the one digit in ``img`` (all zero when blank)."""
    return prepare(img, thicken=thicken).image


def prepare(img: Image.Image | np.ndarray, *, thicken: bool = True) -> Prepared:
    """Like :func:`to_mnist` but also says where the ink was and whether there was any.

    ``img`` is a PIL image, a grey/colour uint8 array (any polarity), or a float array taken
    as an ink map already (1 = ink), e.g. from :func:`to_gray_ink`.
    """
    m = ink_map(img)
    h, w = m.ink.shape
    keep = main_ink(m.ink > 0.5)
    if keep is None:
        return Prepared(np.zeros((28, 28), np.uint8), (0, 0, 0, 0), 0.0, True)
    ink = m.ink * grow(keep)
    y0, y1, x0, x1 = _bbox(ink > FAINT)
    origin, scale = (0.0, 0.0), m.scale
    reduced = m.scale > float(getattr(img, "info", {}).get("digitlab_scale", 1.0))
    if isinstance(img, Image.Image) and reduced and max(y1 - y0, x1 - x0) < REFINE_BELOW:
        ink, origin, scale = _refine(img, m, (y0, y1, x0, x1))
        keep = main_ink(ink > 0.5)
        if keep is None:
            return Prepared(np.zeros((28, 28), np.uint8), (0, 0, 0, 0), 0.0, True)
        ink = ink * grow(keep)
        y0, y1, x0, x1 = _bbox(ink > FAINT)
    image, thickened = normalise_ink(ink[y0:y1, x0:x1], thicken=thicken)
    box = (
        int(origin[1] + x0 * scale),
        int(origin[0] + y0 * scale),
        max(1, round((x1 - x0) * scale)),
        max(1, round((y1 - y0) * scale)),
    )
    box = clip_box(box, input_size(img))
    fraction = np.count_nonzero(keep) * (scale / m.scale) ** 2 / (h * w)
    return Prepared(image, box, min(1.0, fraction), False, thickened)


def _refine(
    img: Image.Image, m: InkMap, bbox: tuple[int, int, int, int]
) -> tuple[np.ndarray, tuple[float, float], float]:
    """Re-read a small digit from the (possibly draft-decoded) full image around its box."""
    y0, y1, x0, x1 = bbox
    f = m.scale / float(img.info.get("digitlab_scale", 1.0))  # loaded px per work px
    pad = 0.5 * max(y1 - y0, x1 - x0)
    left, top = max(0, math.floor((x0 - pad) * f)), max(0, math.floor((y0 - pad) * f))
    right = min(img.size[0], math.ceil((x1 + pad) * f))
    bottom = min(img.size[1], math.ceil((y1 + pad) * f))
    crop = img.crop((left, top, right, bottom))
    crop.info = dict(img.info)
    fine = ink_map(crop)
    loaded = float(img.info.get("digitlab_scale", 1.0))
    return fine.ink, (top * loaded, left * loaded), fine.scale


def main_ink(mask: np.ndarray) -> np.ndarray | None:
    """The mask of one digit's strokes: the largest component plus the pieces near it.

    Broken strokes and the separate bar of a 4 or 5 are kept; specks (tiny components, or
    small ones far from the digit) are dropped. None when there is no ink.
    """
    labels, n = ndi.label(mask, structure=EIGHT)
    if n == 0:
        return None
    if n == 1:  # most digits: one stroke, kept unless it is a lone pixel
        return mask.copy() if mask.size <= 4 or np.count_nonzero(mask) >= 2 else None
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if areas.max() < 2 and mask.size > 4:
        return None
    order = np.argsort(-areas)
    boxes = ndi.find_objects(labels)
    main = boxes[order[0]]
    y0, y1, x0, x1 = main[0].start, main[0].stop, main[1].start, main[1].stop
    kept = [order[0] + 1]
    for i in order[1:]:
        a = areas[i]
        if a < max(2, 0.01 * areas[order[0]]):
            break
        sl = boxes[i]
        reach = 0.25 * max(y1 - y0, x1 - x0)
        gap_y = max(0, sl[0].start - y1, y0 - sl[0].stop)
        gap_x = max(0, sl[1].start - x1, x0 - sl[1].stop)
        if a >= 0.25 * areas[order[0]] or max(gap_y, gap_x) <= reach:
            kept.append(i + 1)
            y0, y1 = min(y0, sl[0].start), max(y1, sl[0].stop)
            x0, x1 = min(x0, sl[1].start), max(x1, sl[1].stop)
    if len(kept) == n:
        return mask.copy()
    wanted = np.zeros(n + 1, bool)  # a lookup: np.isin costs ten times as much on a digit
    wanted[kept] = True
    return wanted[labels]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def normalise_ink(ink: np.ndarray, *, thicken: bool = True) -> tuple[np.ndarray, bool]:
    """An ink crop (1 = ink, tight box) → MNIST's 28×28 uint8, and whether it was thickened.

    Longest side to 20 px (aspect kept; box filter when shrinking, bicubic when enlarging),
    strokes that would end thinner than ``MIN_STROKE`` dilated first, then the centre of mass
    moved to (14, 14) by a whole-pixel shift kept inside the frame, as MNIST was built.
    """
    thickened = False
    if thicken:
        s = BOX_SIDE / max(ink.shape)
        width = stroke_width(ink > 0.5)
        if width * s < MIN_STROKE:
            r = round((TARGET_STROKE / s - width) / 2)
            if r > 0:
                ink = ndi.maximum_filter(np.pad(ink, r), size=2 * r + 1)
                thickened = True
    h, w = ink.shape
    s = BOX_SIDE / max(h, w)
    size = (max(1, min(BOX_SIDE, round(w * s))), max(1, min(BOX_SIDE, round(h * s))))
    digit = ink
    if size != (w, h):
        shrink = s < 1
        resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
        digit = np.asarray(Image.fromarray(ink.astype(np.float32), "F").resize(size, resample))
    peak = float(digit.max())
    if peak <= 0:
        return np.zeros((28, 28), np.uint8), thickened
    digit = np.minimum(np.maximum(digit / peak, 0), 1)
    total = float(digit.sum())
    cy = float((digit.sum(axis=1) * np.arange(digit.shape[0])).sum()) / total
    cx = float((digit.sum(axis=0) * np.arange(digit.shape[1])).sum()) / total
    top = min(max(round(CENTRE - cy), 0), 28 - digit.shape[0])
    left = min(max(round(CENTRE - cx), 0), 28 - digit.shape[1])
    out = np.zeros((28, 28), np.float32)
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.rint(out * 255).astype(np.uint8), thickened


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px: twice the area over the perimeter.

    The perimeter is Cauchy–Crofton's estimate, π/4 times the count of pixel edges between
    ink and background, which is unbiased for curves at any angle (a 1-px line reads 1.27).
    """
    area = np.count_nonzero(mask)
    if area == 0:
        return 0.0
    edges = (
        np.count_nonzero(mask[1:] != mask[:-1])
        + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
        + np.count_nonzero(mask[0])
        + np.count_nonzero(mask[-1])
        + np.count_nonzero(mask[:, 0])
        + np.count_nonzero(mask[:, -1])
    )
    return 2.0 * area / (math.pi / 4 * max(edges, 1))
