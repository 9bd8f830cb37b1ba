"""synth.fonts: other people's handwriting, rendered from the fonts `make fonts` installs."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.paths import fonts_dir
from digitlab.preprocess import load_image
from digitlab.synth import fonts


@pytest.fixture(scope="module")
def folder() -> Path:
    """The installed fonts; their absence is a failure, not a skip: CI installs them."""
    try:
        for family in fonts.FONTS:
            fonts.font_file(family)
    except DigitlabError as exc:
        pytest.fail(str(exc))
    return fonts_dir()


def install_without_npm(target: Path) -> subprocess.CompletedProcess:
    """``python -m digitlab.synth.fonts TARGET`` (what `make fonts` runs) where no npm is."""
    env = {**os.environ, "PATH": str(target.parent / "no-bin")}
    return subprocess.run(
        [sys.executable, "-m", "digitlab.synth.fonts", str(target)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_held_out_and_training_families_are_disjoint_and_cover_every_font():
    assert fonts.TRAIN_FAMILIES and fonts.HELD_OUT_FAMILIES
    assert not set(fonts.TRAIN_FAMILIES) & set(fonts.HELD_OUT_FAMILIES)
    assert set(fonts.TRAIN_FAMILIES) | set(fonts.HELD_OUT_FAMILIES) == set(fonts.FONTS)
    assert len(fonts.FONTS) >= 20 and len(fonts.HELD_OUT_FAMILIES) >= 5
    assert all(v.count(".") == 2 and v.replace(".", "").isdigit() for v in fonts.FONTS.values())


def test_a_missing_fonts_folder_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DigitlabError) as err:
        fonts.font_samples(3, seed=0, folder=tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message and "make fonts" in message and "nowhere" in message
    monkeypatch.setenv("DIGITLAB_FONTS", str(tmp_path))  # a folder without the fonts
    with pytest.raises(DigitlabError, match=r"no homemade-apple\.woff.*make fonts"):
        fonts.font_samples(1, seed=0)
    with pytest.raises(DigitlabError, match="unknown handwriting font 'comic-sans'"):
        fonts.font_file("comic-sans")


def test_installing_without_npm_warns_in_one_line_and_succeeds(tmp_path):
    """`make setup` on a machine without Node.js: one warning line, exit 0, nothing written."""
    done = install_without_npm(tmp_path / "fonts")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and "npm not found" in done.stderr
    assert "make fonts" in done.stderr and not (tmp_path / "fonts").exists()


def test_a_package_without_a_licence_is_one_clear_error(tmp_path):
    """An npm package that lacks a file we pin is a DigitlabError line, not a KeyError."""
    import json
    import tarfile

    tgz = tmp_path / "fontsource-caveat-5.3.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in [("package.json", json.dumps({"version": "5.3.0"}).encode()),
                           ("files/caveat-latin-400-normal.woff", b"wOFF")]:  # fmt: skip
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DigitlabError, match="has no LICENSE"):
        fonts._unpack(tgz, "caveat", "5.3.0")


def test_installing_again_is_a_quick_no_op(folder, tmp_path):
    """With every font there, the installer needs neither npm nor the network."""
    target = tmp_path / "fonts"
    target.mkdir()
    for family in fonts.FONTS:
        (target / f"{family}.woff").write_bytes((folder / f"{family}.woff").read_bytes())
    done = install_without_npm(target)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip() == f"fonts: {len(fonts.FONTS)} handwriting families in {target}"


def test_installed_fonts_are_the_pinned_families_with_their_licences(folder):
    for family in fonts.FONTS:
        licence = (folder / f"{family}.LICENSE").read_text()
        assert "Open Font License" in licence or "Apache License" in licence
        face = fonts._glyph(str(folder / f"{family}.woff"), 64, "7")
        assert face.shape[0] >= 20  # a real glyph, not an empty .notdef


def test_same_seed_gives_the_same_uploads_which_decode(folder):
    samples = fonts.font_samples(14, seed=3, families=fonts.TRAIN_FAMILIES)
    assert samples == fonts.font_samples(14, seed=3, families=fonts.TRAIN_FAMILIES)
    other = fonts.font_samples(14, seed=4, families=fonts.TRAIN_FAMILIES)
    assert all(a.data != b.data for a, b in zip(samples, other, strict=True))
    assert [s.family for s in samples] == [*fonts.TRAIN_FAMILIES, *fonts.TRAIN_FAMILIES][:14]
    formats = {load_image(s.data).format for s in samples}
    assert formats == {"PNG", "JPEG"}
    assert all(len(s.text) == 1 and s.text.isdigit() and s.pen in fonts.PENS for s in samples)
    numbers = fonts.font_samples(6, seed=3, lengths=(2, 10))
    assert all(2 <= len(s.text) <= 10 and s.text.isdigit() for s in numbers)
    assert all(min(load_image(s.data).size) >= 8 for s in numbers)


def ink_of(family: str, pen: str = "regular", slant: float = 0.0, style=fonts.CLEAN, seed=1):
    font = fonts.font_file(family)
    return [
        fonts.ink(d, font, 96, pen, False, slant, style, np.random.default_rng(seed), 96)
        for d in "0123456789"
    ]


def test_thicker_pens_leave_more_ink(folder):
    """Ink per digit (summed over 3 families x 10 digits) grows from hairline to marker."""
    families = ("caveat", "rock-salt", "edu-nsw-act-foundation")
    mass = [sum(a.sum() for f in families for a in ink_of(f, pen)) for pen in fonts.PENS]
    assert mass == sorted(mass) and len(set(mass)) == len(mass), dict(
        zip(fonts.PENS, mass, strict=True)
    )
    assert mass[-1] > 3 * mass[0]  # a marker lays down several times a hairline's ink


def test_each_variation_changes_the_strokes_and_nothing_else_does(folder):
    plain = ink_of("kalam")
    assert all(np.array_equal(a, b) for a, b in zip(plain, ink_of("kalam"), strict=True))
    slanted = ink_of("kalam", slant=15.0)
    # leaning right widens a digit's box: the top moves right of the bottom
    assert np.mean([s.shape[1] - p.shape[1] for s, p in zip(slanted, plain, strict=True)]) > 10
    for change in ({"elastic": 1.0}, {"bleed": 1.0}):
        style = dataclasses.replace(fonts.CLEAN, **change)
        varied = ink_of("kalam", style=style)
        differ = [
            a.shape != b.shape or not np.allclose(a, b) for a, b in zip(varied, plain, strict=True)
        ]
        assert all(differ), change


def blocky_factor(img: np.ndarray) -> int:
    """The largest k >= 2 for which the picture is made of k x k blocks of one colour, or 1."""
    for k in range(20, 1, -1):
        if img.shape[0] % k == 0 and img.shape[1] % k == 0:
            small = img[::k, ::k]
            if np.array_equal(np.repeat(np.repeat(small, k, 0), k, 1), img):
                return k
    return 1


def test_low_resolution_digits_are_small_and_enlarged_blocky_or_blurred(folder):
    def style(upscale: str) -> fonts.Style:
        return fonts.Style(pages=("paper",), low_res=(8, 12), upscales=(upscale,), low_res_jpeg=0)

    for s in fonts.font_samples(8, seed=5, style=style("blocky")):
        img = np.asarray(Image.open(io.BytesIO(s.data)))
        assert 8 <= s.low_res <= 12 and s.upscale == "blocky"
        assert blocky_factor(img) >= 3  # a small picture enlarged by 3-20x with nearest
    blurred = fonts.font_samples(8, seed=5, style=style("blurred"))
    assert all(blocky_factor(np.asarray(Image.open(io.BytesIO(s.data)))) == 1 for s in blurred)
    full = fonts.font_samples(8, seed=5, style=fonts.Style(pages=("paper",)))
    assert all(blocky_factor(np.asarray(Image.open(io.BytesIO(s.data)))) == 1 for s in full)


@pytest.mark.slow
def test_the_bundled_model_reads_clean_font_digits_and_numbers(folder):
    """End to end through predict, as a user's file: clean paper, the fonts' own pens."""
    from digitlab.predict import Predictor

    pred = Predictor()
    families = fonts.TRAIN_FAMILIES + fonts.HELD_OUT_FAMILIES
    digits = fonts.font_samples(96, seed=11, families=families, style=fonts.CLEAN)
    right = [pred.predict_image(s.data)["digit"] == int(s.text) for s in digits]
    assert np.mean(right) >= 0.9  # measured 0.979: a caveat 1 read as 7, a round 0 rejected
    numbers = fonts.font_samples(12, seed=12, families=families, lengths=(2, 4), style=fonts.CLEAN)
    exact = [pred.predict_image(s.data, number=True)["number"] == s.text for s in numbers]
    assert np.mean(exact) >= 0.75  # measured 1.0


@pytest.mark.slow
def test_font_digits_for_training_are_read_back_like_uploads_and_need_no_worker_count(folder):
    """prepared_font_digits: 28x28 digits as predict reads them, their labels, low-res
    chunks among them, and the same result from one worker as from two."""
    from digitlab.inputs import digit_input

    n = 2 * fonts.FONT_CHUNK + 7
    one = fonts.prepared_font_digits(n, seed=3, families=fonts.TRAIN_FAMILIES[:3], workers=1)
    two = fonts.prepared_font_digits(n, seed=3, families=fonts.TRAIN_FAMILIES[:3], workers=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    x, y = one
    assert x.shape[1:] == (28, 28) and x.dtype == np.uint8 and len(x) == len(y) >= n - 3
    assert set(y.tolist()) == set(range(10))
    assert (x.reshape(len(x), -1).max(1) > 128).all()  # every one has ink
    # the first chunk's first digit is what predict reads of its upload
    first = fonts.font_samples(fonts.FONT_CHUNK, seed=_first_chunk_seed(3),
                               families=fonts.TRAIN_FAMILIES[:3])[0]  # fmt: skip
    assert np.array_equal(digit_input(first.data).image, x[0]) and int(first.text) == y[0]


@pytest.mark.slow  # 2-4 s: keeps `make test-fast` under 2 minutes
def test_font_non_digits_are_training_letters_and_shapes_in_the_same_pens(folder):
    """font_non_digits: letters never in the benchmark and shapes, each pen in turn, the same
    bytes from the same seed; prepared ones are 28x28 'not a digit' images with ink."""
    from digitlab.synth.negatives import SHAPES, TRAIN_LETTERS
    from digitlab.synth.uploads import LETTERS

    families = fonts.TRAIN_FAMILIES[:2]
    samples = fonts.font_non_digits(20, seed=9, families=families)
    again = fonts.font_non_digits(20, seed=9, families=families)
    assert [s.data for s in samples] == [s.data for s in again]
    letters, shapes = samples[::2], samples[1::2]
    assert all(1 <= len(s.text) <= 2 and set(s.text) <= set(TRAIN_LETTERS) for s in letters)
    assert not any(set(s.text) & set(LETTERS) for s in letters)  # the benchmark's stay unseen
    assert [s.text for s in shapes] == [SHAPES[i % len(SHAPES)] for i in range(10)]
    assert {s.pen for s in samples} == set(fonts.PENS) and {s.family for s in samples} == set(
        families
    )
    for s in samples[:6]:
        assert load_image(s.data).size[0] >= 8  # an image a user could send
    x, y = fonts.prepared_font_non_digits(30, seed=9, families=families, workers=1)
    assert x.shape[1:] == (28, 28) and len(x) == len(y) >= 27 and set(y.tolist()) == {10}
    assert (x.reshape(len(x), -1).max(1) > 128).all()


def _first_chunk_seed(seed: int) -> int:
    return int(np.random.default_rng(seed).integers(2**62))


def test_the_low_resolution_share_of_font_digit_chunks_is_exact():
    pct = round(fonts.LOW_RES_SHARE * 100)
    lows = [(k + 1) * pct // 100 > k * pct // 100 for k in range(100)]
    assert sum(lows) == pct


def test_training_fonts_warn_once_and_train_without_them_when_missing(tmp_path, monkeypatch):
    heard: list[str] = []
    assert fonts.training_fonts(0, heard.append) == () and heard == []
    monkeypatch.setenv("DIGITLAB_FONTS", str(tmp_path))
    assert fonts.training_fonts(500, heard.append) == ()
    assert len(heard) == 1 and heard[0].startswith("warning:") and "make fonts" in heard[0]
    assert "without the 500 samples" in heard[0]
