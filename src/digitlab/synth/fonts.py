"""Digits and numbers in other people's handwriting: Google Fonts' handwriting families.

MNIST holds about 500 writers of one place and era. Each family below was made from one
person's hand; ``make fonts`` installs them, pinned, from npm's ``@fontsource`` packages into
:func:`digitlab.paths.fonts_dir` (``python -m digitlab.synth.fonts``; nothing is committed).
A rendered sample gets what a real pen and camera add — stroke weight from hairline to
marker, ink bleed and uneven pressure, slant, elastic wobble, neighbours of uneven size and
baseline that may touch, low resolution, paper, light and JPEG — and is encoded like an
upload (the page itself is drawn by :mod:`digitlab.synth.uploads`), so it goes through
``predict`` exactly as a user's file does.

:data:`HELD_OUT_FAMILIES` are never trained on: they are the development check of how the
model reads hands it has never seen (``benchmarks/other_hands.py``). Families, not glyphs,
are held out, so no held-out writer's "7" can leak in through another digit.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab.errors import DigitlabError
from digitlab.synth.uploads import compose_digits, encode_image, render_ink

# npm package @fontsource/NAME -> the exact version installed: Google Fonts' handwriting
# families with Latin digits, print and cursive, school and rushed, felt-tip, brush, marker and
# fine pen, upright and slanted (the many hands of docs/other-hands-training.md, run 3). None
# is a family that Debian's fonts-* packages ship: those are kept for checks made outside.
FONTS: dict[str, str] = {
    "caveat": "5.3.0",
    "indie-flower": "5.3.0",
    "patrick-hand": "5.3.0",
    "kalam": "5.3.0",
    "gochi-hand": "5.3.0",
    "reenie-beanie": "5.3.0",
    "shadows-into-light": "5.3.0",
    "gloria-hallelujah": "5.3.0",
    "schoolbell": "5.3.0",
    "architects-daughter": "5.3.0",
    "just-another-hand": "5.3.0",
    "permanent-marker": "5.3.0",
    "sue-ellen-francisco": "5.3.0",
    "zeyada": "5.3.0",
    "edu-sa-beginner": "5.3.0",
    "mynerve": "5.3.0",
    "la-belle-aurore": "5.3.0",
    "annie-use-your-telescope": "5.3.0",
    "bad-script": "5.3.0",
    "caveat-brush": "5.3.0",
    "cedarville-cursive": "5.3.0",
    "comforter": "5.2.8",
    "coming-soon": "5.3.0",
    "cookie": "5.3.0",
    "crafty-girls": "5.3.0",
    "damion": "5.3.0",
    "dawning-of-a-new-day": "5.3.0",
    "dekko": "5.3.0",
    "delicious-handrawn": "5.3.0",
    "delius": "5.3.0",
    "east-sea-dokdo": "5.3.0",
    "edu-qld-beginner": "5.3.0",
    "edu-tas-beginner": "5.3.0",
    "edu-vic-wa-nt-beginner": "5.3.0",
    "fuzzy-bubbles": "5.3.0",
    "gaegu": "5.3.0",
    "gamja-flower": "5.3.0",
    "give-you-glory": "5.3.0",
    "grape-nuts": "5.3.0",
    "hachi-maru-pop": "5.3.0",
    "handlee": "5.3.0",
    "hi-melody": "5.3.0",
    "itim": "5.3.0",
    "just-me-again-down-here": "5.3.0",
    "liu-jian-mao-cao": "5.3.0",
    "long-cang": "5.3.0",
    "ma-shan-zheng": "5.3.1",
    "mali": "5.3.0",
    "mansalva": "5.3.0",
    "marck-script": "5.3.0",
    "meddon": "5.3.0",
    "montez": "5.3.0",
    "mr-dafoe": "5.3.0",
    "nerko-one": "5.3.0",
    "neucha": "5.3.0",
    "nothing-you-could-do": "5.3.0",
    "oooh-baby": "5.3.0",
    "over-the-rainbow": "5.3.0",
    "pangolin": "5.3.0",
    "playpen-sans": "5.3.0",
    "poor-story": "5.3.0",
    "qwigley": "5.2.8",
    "rancho": "5.3.0",
    "sacramento": "5.3.0",
    "satisfy": "5.3.0",
    "sedgwick-ave": "5.3.0",
    "shadows-into-light-two": "5.3.0",
    "short-stack": "5.3.0",
    "single-day": "5.3.1",
    "square-peg": "5.3.0",
    "sriracha": "5.3.0",
    "sunshiney": "5.3.0",
    "swanky-and-moo-moo": "5.3.0",
    "unkempt": "5.3.0",
    "vibur": "5.3.0",
    "waiting-for-the-sunrise": "5.3.0",
    "walter-turncoat": "5.3.0",
    "whisper": "5.3.0",
    "yellowtail": "5.3.0",
    "yomogi": "5.3.0",
    "zen-kurenaido": "5.3.0",
    "zhi-mang-xing": "5.3.0",
    # held out (below): cursive, rough marker, loose fine pen, school print, tall narrow, bold
    "homemade-apple": "5.3.0",
    "rock-salt": "5.3.0",
    "the-girl-next-door": "5.3.0",
    "edu-nsw-act-foundation": "5.3.0",
    "loved-by-the-king": "5.3.0",
    "covered-by-your-grace": "5.3.0",
}
HELD_OUT_FAMILIES: tuple[str, ...] = (
    "homemade-apple",
    "rock-salt",
    "the-girl-next-door",
    "edu-nsw-act-foundation",
    "loved-by-the-king",
    "covered-by-your-grace",
)
TRAIN_FAMILIES: tuple[str, ...] = tuple(f for f in FONTS if f not in HELD_OUT_FAMILIES)

PENS = ("hairline", "thin", "regular", "bold", "marker")
# The pages of digitlab.synth.uploads this module draws on ("thin" and "corner" resize the
# ink themselves; here the pen and the fill of the page are chosen before the page is drawn).
PAGES = ("paper", "photo", "shadow", "noisy", "color", "canvas", "inverted")
UPSCALES = ("blocky", "blurred")
MISSING_HINT = "run `make fonts` (it needs npm and the network)"


@dataclass(frozen=True)
class Style:
    """How much variation a sample gets; the defaults are the benchmark's.

    ``height`` and ``number_height`` are the digit's height in the upload (pixels, drawn
    log-uniformly); ``low_res`` draws the digit that small instead and enlarges the page
    ``blocky`` (nearest) or ``blurred`` (bicubic), then saves it as JPEG with probability
    ``low_res_jpeg``. Digits lean ``-slant/2`` to ``+slant`` degrees; ``elastic`` and
    ``bleed`` scale the wobble and the ink's bleed/pressure (0 turns them off); ``touching``
    is the share of numbers in which two neighbours touch.
    """

    pens: tuple[str, ...] = PENS
    pages: tuple[str, ...] = PAGES
    number_pages: tuple[str, ...] = ("paper", "photo", "color", "canvas")
    height: tuple[int, int] = (20, 240)
    number_height: tuple[int, int] = (20, 120)
    slant: float = 20.0
    elastic: float = 1.0
    bleed: float = 1.0
    touching: float = 0.3
    low_res: tuple[int, int] | None = None
    upscales: tuple[str, ...] = UPSCALES
    low_res_jpeg: float = 0.3


# an easy setting: the font's own pen on clean paper, upright, no wobble or bleed
CLEAN = Style(
    pens=("regular",),
    pages=("paper",),
    number_pages=("paper",),
    height=(48, 96),
    number_height=(48, 96),
    slant=0.0,
    elastic=0.0,
    bleed=0.0,
    touching=0.0,
)
# heavy sensor noise on a 10 px digit leaves nothing a person could read
LOW_RES = Style(pages=tuple(p for p in PAGES if p != "noisy"), low_res=(8, 16))


class FontSample(NamedTuple):
    """One rendered upload and what it shows: ``low_res`` is the digit's height in pixels
    before enlarging (0: drawn at full size), ``upscale`` how it was enlarged."""

    data: bytes
    text: str
    family: str
    pen: str
    page: str
    touching: bool = False
    low_res: int = 0
    upscale: str = ""


def font_samples(
    n: int,
    seed: int,
    families: tuple[str, ...] = HELD_OUT_FAMILIES,
    lengths: tuple[int, int] = (1, 1),
    style: Style = Style(),
    folder: str | Path | None = None,
) -> list[FontSample]:
    """``n`` uploads of digit strings of ``lengths`` (inclusive) in ``families``.

    Families take turns, and pens take turns within each family, so every family meets
    every pen; the rest is drawn from ``numpy.random.default_rng(seed)``: the same
    arguments give the same bytes. DigitlabError (one line) when the fonts are not there.
    """
    paths = {f: font_file(f, folder) for f in families}
    rng = np.random.default_rng(seed)
    out = []
    for _, family, pen in _turns(n, families, style.pens):
        count = int(rng.integers(lengths[0], lengths[1] + 1))
        text = "".join(str(d) for d in rng.integers(0, 10, count))
        touching = count > 1 and bool(rng.random() < style.touching)
        sample_rng = np.random.default_rng(rng.integers(2**63))
        out.append(render(text, family, sample_rng, style, pen, touching, paths[family]))
    return out


def _turns(
    n: int, families: tuple[str, ...], pens: tuple[str, ...]
) -> Iterator[tuple[int, str, str]]:
    """(i, family, pen) of ``n`` samples: families take turns, and pens take turns within
    each family, so every family meets every pen."""
    for i in range(n):
        yield i, families[i % len(families)], pens[(i // len(families)) % len(pens)]


FONT_CHUNK = 200  # font digits per worker task
LOW_RES_SHARE = 0.3  # of training font digits, drawn small and enlarged


def prepared_font_digits(
    n: int, seed: int, families: tuple[str, ...] = TRAIN_FAMILIES, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` single digits in ``families``, :data:`LOW_RES_SHARE` of them in the
    :data:`LOW_RES` style and the rest in the benchmark's, each read back to 28x28 by
    :func:`digitlab.inputs.digit_input` exactly as ``predict`` reads a file; and their labels.

    Chunks run in ``workers`` processes (about 35 ms a digit on one core); the result depends
    on ``seed`` alone. An upload where no ink is found is left out (94 of 15,000 for the
    bundled model).
    """
    return _prepared(n, seed, families, workers, non_digits=False)


def prepared_font_non_digits(
    n: int, seed: int, families: tuple[str, ...] = TRAIN_FAMILIES, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` :func:`font_non_digits` read back as :func:`prepared_font_digits` reads digits,
    labelled 10 ("not a digit")."""
    return _prepared(n, seed, families, workers, non_digits=True)


def _prepared(
    n: int, seed: int, families: tuple[str, ...], workers: int | None, non_digits: bool
) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.system import map_chunks

    rng = np.random.default_rng(seed)
    tasks = []
    for k, i in enumerate(range(0, n, FONT_CHUNK)):
        pct = round(LOW_RES_SHARE * 100)
        low = (k + 1) * pct // 100 > k * pct // 100  # spread evenly over the chunks
        tasks.append((min(FONT_CHUNK, n - i), int(rng.integers(2**62)), families, low, non_digits))
    done = map_chunks(_font_chunk, tasks, workers)
    if not done:
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([x for x, _ in done]), np.concatenate([y for _, y in done])


def _font_chunk(
    n: int, seed: int, families: tuple[str, ...], low_res: bool, non_digits: bool
) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.inputs import digit_input

    style = LOW_RES if low_res else Style()
    if non_digits:
        read = [(digit_input(s.data), 10) for s in font_non_digits(n, seed, families, style)]
    else:
        read = [
            (digit_input(s.data), int(s.text)) for s in font_samples(n, seed, families, style=style)
        ]
    kept = [(r.image, label) for r, label in read if not r.empty]
    x = np.stack([im for im, _ in kept]) if kept else np.zeros((0, 28, 28), np.uint8)
    return x, np.array([label for _, label in kept], np.int64)


def render(
    text: str,
    family: str,
    rng: np.random.Generator,
    style: Style = Style(),
    pen: str = "regular",
    touching: bool = False,
    font: str | Path | None = None,
) -> FontSample:
    """One upload of ``text`` in ``family`` (its file ``font``, else from the fonts folder).

    Every random value is drawn up front from ``rng`` and each stage has a generator of its
    own, so turning one variation off leaves the others exactly as they were.
    """
    path = Path(font) if font else font_file(family)

    def strokes(work: int, height: int, slant: float, r: np.random.Generator) -> np.ndarray:
        return ink(text, path, work, pen, touching, slant, style, r, height)

    return _upload(strokes, text, family, rng, style, pen, touching)


def font_non_digits(
    n: int,
    seed: int,
    families: tuple[str, ...] = TRAIN_FAMILIES,
    style: Style = Style(),
    folder: str | Path | None = None,
    letters: str | None = None,
    shapes: tuple[str, ...] | None = None,
) -> list[FontSample]:
    """``n`` uploads that are not digits, in the hands :func:`font_samples` writes digits in:
    one or two ``letters`` (default :data:`digitlab.synth.negatives.TRAIN_LETTERS`) in a
    font of ``families``, and every other one a shape of ``shapes`` (default
    :data:`digitlab.synth.negatives.SHAPES`; () for letters only) redrawn with the same
    pens, bleed, slant and wobble, on the same pages. ``text`` is the letters or the shape's
    kind. A model that learns the fonts' digits without these takes a letter or a triangle
    in those pens for a digit (docs/other-hands-training.md)."""
    from digitlab.synth.negatives import SHAPES, TRAIN_LETTERS

    letters = letters or TRAIN_LETTERS
    shapes = SHAPES if shapes is None else shapes
    paths = {f: font_file(f, folder) for f in families}
    rng = np.random.default_rng(seed)
    out = []
    for i, family, pen in _turns(n, families, style.pens):
        sample_rng = np.random.default_rng(rng.integers(2**63))
        if i % 2 == 0 or not shapes:
            count = 1 + int(rng.random() < 0.3)
            text = "".join(letters[k] for k in rng.integers(len(letters), size=count))
            out.append(render(text, family, sample_rng, style, pen, font=paths[family]))
            continue
        kind = shapes[(i // 2) % len(shapes)]
        strokes = partial(_shape, kind, pen, style)
        out.append(_upload(strokes, kind, family, sample_rng, style, pen, count=1))
    return out


def _shape(
    kind: str,
    pen: str,
    style: Style,
    work: int,
    height: int,
    slant: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A shape of ``kind``, ``work`` pixels tall, written as :func:`ink` writes digits."""
    from digitlab.synth.negatives import non_digit_ink

    shape_rng, pen_rng, wobble_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=3))
    a = _crop(non_digit_ink(kind, shape_rng))
    wide = max(1, round(a.shape[1] * work / a.shape[0]))
    a = np.asarray(Image.fromarray(a, "F").resize((wide, work), Image.Resampling.BILINEAR))
    return _by_hand(np.clip(a, 0, 1), pen, work, height, slant, style, pen_rng, wobble_rng)


def _upload(
    strokes: Callable[[int, int, float, np.random.Generator], np.ndarray],
    text: str,
    family: str,
    rng: np.random.Generator,
    style: Style,
    pen: str,
    touching: bool = False,
    count: int | None = None,
) -> FontSample:
    """What ``strokes(work, height, slant, rng)`` writes, ``height`` pixels tall, on a page
    of ``style`` (and enlarged from low resolution): one file as a user sends it. ``count``
    characters (default: of ``text``) choose between the pages of single digits and numbers."""
    count = count or len(text)
    lo, hi = style.low_res or (style.height if count == 1 else style.number_height)
    height = int(rng.integers(lo, hi + 1)) if style.low_res else _log_uniform(rng, lo, hi)
    work = max(height, 96)  # pens are drawn at >= 96 px (a 1 px line then), the page shrinks them
    slant = rng.uniform(-0.5, 1.0) * style.slant  # people lean right more often than left
    seeds = rng.integers(2**63, size=3)
    pages = style.pages if count == 1 else style.number_pages
    page = pages[int(rng.integers(len(pages)))]
    upscale = style.upscales[int(rng.integers(len(style.upscales)))] if style.low_res else ""
    a = strokes(work, height, slant, np.random.default_rng(seeds[0]))
    data = _on_page(a, height / work, count, page, np.random.default_rng(seeds[1]))
    if style.low_res:
        data = _enlarge(data, upscale, style.low_res_jpeg, np.random.default_rng(seeds[2]))
    low = height if style.low_res else 0
    return FontSample(data, text, family, pen, page, touching, low, upscale)


def ink(
    text: str,
    font: str | Path,
    height: int,
    pen: str,
    touching: bool,
    slant: float,
    style: Style,
    rng: np.random.Generator,
    final: int | None = None,
) -> np.ndarray:
    """The written strip as float ink in [0, 1], digits about ``height`` pixels tall, to be
    shown ``final`` pixels tall (pens are as wide as they would be there)."""
    final = final or height
    compose_rng, pen_rng, wobble_rng = (
        np.random.default_rng(s) for s in rng.integers(2**63, size=3)
    )
    size = round(height * 1.4)  # a digit is about 0.7 of a handwriting font's size
    glyphs = [_glyph(str(font), size, ch) for ch in text]
    a = compose_digits(glyphs, height, touching, compose_rng)  # type: ignore[arg-type]
    return _by_hand(a, pen, height, final, slant, style, pen_rng, wobble_rng)


def _by_hand(
    a: np.ndarray,
    pen: str,
    height: int,
    final: int,
    slant: float,
    style: Style,
    pen_rng: np.random.Generator,
    wobble_rng: np.random.Generator,
) -> np.ndarray:
    """Strokes ``a`` (ink in [0, 1], ``height`` tall) redrawn with ``pen``, bled, pressed
    unevenly, slanted and wobbled as :func:`ink` writes them; cropped to the ink."""
    a = _pen(a, pen, height, height / final, pen_rng)
    bleed_sigma, bleed_at, pressure = wobble_rng.uniform((0.3, 0.4, 0.0), (1.2, 0.9, 0.4))
    field_seed = wobble_rng.integers(2**63, size=2)
    if style.bleed:
        a = _bleed(a, bleed_sigma * style.bleed * max(1.0, height / 48), bleed_at)
        a *= 1 - pressure * style.bleed * _field(a.shape, height, field_seed[0])
    a = _slant(a, slant)
    if style.elastic:
        a = _elastic(a, 0.06 * height * style.elastic, height, field_seed[1])
    return _crop(a)


# ------------------------------------------------------------------------------ fonts


def font_file(family: str, folder: str | Path | None = None) -> Path:
    """The installed font file of ``family``; one DigitlabError line when it is not there."""
    from digitlab.paths import fonts_dir

    if family not in FONTS:
        raise DigitlabError(f"unknown handwriting font {family!r}: known are {', '.join(FONTS)}")
    where = Path(folder) if folder else fonts_dir()
    path = where / f"{family}.woff"
    if not path.is_file():
        missing = "no folder" if not where.is_dir() else f"no {path.name}"
        raise DigitlabError(
            f"handwriting fonts not installed ({missing} in {where}): {MISSING_HINT}"
        )
    return path


def training_fonts(wanted: int, note: Callable[[str], None] | None) -> tuple[str, ...]:
    """:data:`TRAIN_FAMILIES` when ``wanted`` samples are to be drawn in them and they are
    installed; otherwise () and, when some were wanted, one warning to ``note``: a machine
    without the fonts still trains, on MNIST's writers alone."""
    if not wanted:
        return ()
    try:
        for family in TRAIN_FAMILIES:
            font_file(family)
    except DigitlabError as exc:
        if note is not None:
            note(f"warning: {exc}; training without the {wanted} samples in handwriting fonts")
        return ()
    return TRAIN_FAMILIES


@lru_cache(maxsize=512)
def _glyph(font: str, size: int, ch: str) -> np.ndarray:
    """``ch`` drawn white on black (uint8), cropped to its ink."""
    face = ImageFont.truetype(font, size, layout_engine=ImageFont.Layout.BASIC)
    left, top, right, bottom = face.getbbox(ch)
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), ch, font=face, fill=255)
    a = np.asarray(img)
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def install(folder: str | Path | None = None) -> str:
    """Put the pinned :data:`FONTS` (latin, regular weight, .woff, with their licences) in
    ``folder``; families already there are skipped, so a second run costs nothing.

    Returns one line for the user. Without npm or the network it says so and returns: the
    rest of digitlab works without these fonts.
    """
    from digitlab.fileio import write_bytes_atomic
    from digitlab.paths import fonts_dir

    where = Path(folder) if folder else fonts_dir()
    missing = [f for f in FONTS if not (where / f"{f}.woff").is_file()]
    if not missing:
        return f"fonts: {len(FONTS)} handwriting families in {where}"
    npm = shutil.which("npm")
    if npm is None:
        return (
            "fonts: skipped, npm not found; digitlab works without them, but digitlab.synth.fonts"
            f" and benchmarks/other_hands.py need them: install Node.js, then {MISSING_HINT}"
        )
    specs = [f"@fontsource/{f}@{FONTS[f]}" for f in missing]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [npm, "pack", "--loglevel=error", "--fetch-retries=0", "--fetch-timeout=30000",
               *specs]  # fmt: skip
        try:
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            why = "timed out" if done is None else _first_error(done.stderr)
            return (
                f"fonts: skipped, npm pack failed ({why}); digitlab works without them, but"
                f" digitlab.synth.fonts needs them: {MISSING_HINT} when online"
            )
        for family in missing:
            tgz = Path(tmp) / f"fontsource-{family}-{FONTS[family]}.tgz"
            woff, licence = _unpack(tgz, family, FONTS[family])
            write_bytes_atomic(where / f"{family}.LICENSE", licence)
            write_bytes_atomic(where / f"{family}.woff", woff)  # last: it marks the family done
    return f"fonts: installed {len(missing)} handwriting families in {where}"


def _unpack(tgz: Path, family: str, version: str) -> tuple[bytes, bytes]:
    """The latin regular .woff and the licence from one @fontsource package, checked to be
    the pinned version. (.woff, not .woff2: FreeType opens it without brotli.)"""
    import json

    with tarfile.open(tgz, "r:gz") as tar:

        def member(name: str) -> bytes:
            try:
                fh = tar.extractfile(f"package/{name}")
            except KeyError:
                fh = None
            if fh is None:
                raise DigitlabError(f"{tgz.name} has no {name}")
            return fh.read()

        got = json.loads(member("package.json"))["version"]
        if got != version:
            raise DigitlabError(f"{tgz.name} is version {got}, not the pinned {version}")
        return member(f"files/{family}-latin-400-normal.woff"), member("LICENSE")


def _first_error(text: str) -> str:
    """npm's first error line (``npm error code ECONNREFUSED``), for a one-line warning."""
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()]
    return lines[0][:200] if lines else "no message"


# ------------------------------------------------------------------------------ the pen


def _pen(a: np.ndarray, pen: str, height: int, px: float, rng: np.random.Generator) -> np.ndarray:
    """Redraw the strokes with another pen: ``hairline`` is the strokes' centre line, 1-1.6
    pixels of the upload wide (``px`` drawn pixels make one), ``thin`` erodes (keeping that
    line, so a font's own hairlines survive), ``bold`` and ``marker`` dilate to a width that is
    a share of the height. Edges stay anti-aliased (clipped distances to the new edge)."""
    from scipy import ndimage as ndi

    if pen == "regular":
        return a
    core = np.pad(a > 0.5, 1)
    width = _stroke_width(core)
    skeleton = _skeleton(core)
    line = _grow(skeleton, max(1.0, px * rng.uniform(1.0, 1.6)))
    line = np.clip(ndi.gaussian_filter(line, 0.5) * 1.5, 0, 1)
    if pen == "hairline":
        return line
    share = {"thin": (0.035, 0.05), "bold": (0.11, 0.14), "marker": (0.16, 0.2)}[pen]
    target = rng.uniform(*share) * height
    if pen == "thin":
        target = max(target, 1.5 * px, 1.5)
        depth = max(0.0, (width - target) / 2)
        inside = ndi.distance_transform_edt(core)
        grown = (line.shape[0] - core.shape[0]) // 2
        line = line[grown : grown + core.shape[0], grown : grown + core.shape[1]]
        return np.maximum(np.clip(inside - depth, 0, 1), line).astype(np.float32)
    return _grow(core, width + max(target - width, 0.04 * height))  # a marker font gets bolder


def _skeleton(core: np.ndarray) -> np.ndarray:
    """The one-pixel centre line of ``core`` (bool), by Zhang and Suen's thinning (1984): peel
    border pixels whose removal keeps the shape connected, alternately from two sides."""
    img = np.pad(core, 1).astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            c = img[1:-1, 1:-1]
            # the 8 neighbours P2..P9, clockwise from north
            n = [img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:], img[2:, 2:],
                 img[2:, 1:-1], img[2:, :-2], img[1:-1, :-2], img[:-2, :-2]]  # fmt: skip
            count = sum(x.astype(np.int16) for x in n)
            turns = sum((n[i] == 0) & (n[(i + 1) % 8] == 1) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                side = ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0)
            else:
                side = ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)
            peel = (c == 1) & (count >= 2) & (count <= 6) & (turns == 1) & side
            if peel.any():
                c[peel] = 0
                changed = True
    return img[1:-1, 1:-1].astype(bool)


def _grow(core: np.ndarray, width: float) -> np.ndarray:
    """Strokes ``core`` (bool) widened to about ``width`` pixels, edges anti-aliased."""
    from scipy import ndimage as ndi

    grow = max(0.0, (width - _stroke_width(core)) / 2)
    pad = math.ceil(grow) + 2
    core = np.pad(core, pad)
    outside = ndi.distance_transform_edt(~core)
    return np.clip(grow + 1 - outside, 0, 1).astype(np.float32)


def _stroke_width(core: np.ndarray) -> float:
    """Mean stroke width: a stroke of width w and length L has area wL and ~2L edge pixels."""
    from scipy import ndimage as ndi

    edge = core & ~ndi.binary_erosion(core)
    return 2.0 * core.sum() / max(1, edge.sum())


def _bleed(a: np.ndarray, sigma: float, at: float) -> np.ndarray:
    """Ink soaking into paper: the blurred ink, darkened so that a ``at`` share of it is
    full ink, spreads the strokes and softens their edges; no stroke ever fades away."""
    from scipy import ndimage as ndi

    pad = math.ceil(3 * sigma)
    b = ndi.gaussian_filter(np.pad(a, pad), sigma)
    return np.maximum(np.pad(a, pad), np.clip(b / at, 0, 1)).astype(np.float32)


def _field(shape: tuple[int, ...], height: int, seed: int) -> np.ndarray:
    """A smooth random field in [0, 1] that changes over about half a digit's height."""
    rng = np.random.default_rng(seed)
    h, w = shape
    cell = max(4, height // 2)
    coarse = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    img = Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), 0, 1)


def _slant(a: np.ndarray, degrees: float) -> np.ndarray:
    """Lean the strokes: positive degrees move the tops right (a shear about the middle)."""
    if not degrees:
        return a
    t = math.tan(math.radians(degrees))
    h = a.shape[0]
    pad = math.ceil(abs(t) * h / 2) + 2
    img = Image.fromarray(np.pad(a, ((0, 0), (pad, pad))), "F")
    out = img.transform(img.size, Image.Transform.AFFINE, (1, t, -t * h / 2, 0, 1, 0),
                        Image.Resampling.BILINEAR)  # fmt: skip
    return np.asarray(out)


def _elastic(a: np.ndarray, amount: float, height: int, seed: int) -> np.ndarray:
    """Simard-style elastic distortion: each pixel moves by a smooth random field of up to
    ``amount`` pixels, the hand's wobble within a stroke."""
    from scipy import ndimage as ndi

    pad = math.ceil(amount) + 2
    a = np.pad(a, pad)
    fields = [
        2 * _field(a.shape, height, s) - 1
        for s in np.random.default_rng(seed).integers(2**63, size=2)
    ]
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]].astype(np.float32)
    coords = [yy + amount * fields[0], xx + amount * fields[1]]
    return ndi.map_coordinates(a, coords, order=1, mode="constant").astype(np.float32)


def _crop(a: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero((a > 0.02).any(axis=1)), np.flatnonzero((a > 0.02).any(axis=0))
    if rows.size == 0:
        return a
    return np.clip(a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 0, 1)


# ------------------------------------------------------------------------------ the page


def _on_page(a: np.ndarray, scale: float, count: int, page: str, rng: np.random.Generator) -> bytes:
    """The strip, shrunk by ``scale``, on a page of :mod:`digitlab.synth.uploads`: a single
    digit fills 20-80% of the page's height, a number sits with margins like its numbers."""
    h, w = a.shape[0] * scale, a.shape[1] * scale
    if count == 1:
        ch = h / rng.uniform(0.2, 0.8)
        cw = max(w / 0.9, ch * rng.uniform(0.7, 1.4))
    else:
        cw, ch = w * rng.uniform(1.15, 1.6), h * rng.uniform(1.3, 2.0)
    cw, ch = max(8, round(cw)), max(8, round(ch))
    fill = 1.0 / min(cw / w, ch / h)  # so that render_ink draws the ink at exactly h x w
    return render_ink(a, page, rng, (fill, fill), (cw, ch))


def _enlarge(data: bytes, upscale: str, jpeg: float, rng: np.random.Generator) -> bytes:
    """A small image enlarged 3-20x, as a thumbnail or a screenshot zoomed in."""
    img = Image.open(io.BytesIO(data))
    img.load()
    factor = max(3, min(20, round(rng.uniform(96, 400) / max(img.size))))
    method = Image.Resampling.NEAREST if upscale == "blocky" else Image.Resampling.BICUBIC
    big = img.resize((img.width * factor, img.height * factor), method)
    if rng.random() < jpeg and big.mode != "RGBA":  # a canvas export stays a PNG
        return encode_image(big.convert("RGB"), "JPEG", int(rng.integers(40, 91)))
    return encode_image(big, "PNG", 0)


def _log_uniform(rng: np.random.Generator, lo: int, hi: int) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def main() -> None:
    """``python -m digitlab.synth.fonts [FOLDER]``: what ``make fonts`` runs."""
    line = install(sys.argv[1] if len(sys.argv) > 1 else None)
    print(line, file=sys.stderr if "skipped" in line else sys.stdout)


if __name__ == "__main__":
    main()
