"""The line recogniser: CTC scoring, line images, re-ranking the lattice, training and export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from digitlab.artifact import BUNDLED_MODEL
from digitlab.numbers.lines import (
    BLANK,
    LINE_FILE,
    LINE_HEIGHT,
    STRIDE,
    LineReader,
    ctc_log_likelihood,
    line_image,
    prefix_beam,
)
from digitlab.predict import Predictor
from digitlab.synth import uploads as synth
from digitlab.synth.fonts import TRAIN_FAMILIES

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


def _log_probs(rng: np.random.Generator, t: int) -> np.ndarray:
    z = rng.normal(0, 2, (t, BLANK + 1))
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.mark.parametrize("text", ["", "7", "123", "1123", "4444", "90210"])
def test_ctc_log_likelihood_is_torchs_ctc_loss(text):
    import torch
    import torch.nn.functional as F

    lp = _log_probs(np.random.default_rng(len(text)), 12)
    want = -F.ctc_loss(
        torch.from_numpy(lp)[:, None],
        torch.tensor([[int(c) for c in text]], dtype=torch.long).reshape(1, -1),
        torch.tensor([12]),
        torch.tensor([len(text)]),
        blank=BLANK,
        reduction="sum",
    ).item()
    assert ctc_log_likelihood(lp, text) == pytest.approx(want, rel=1e-6)


def test_a_string_too_long_for_the_line_is_impossible():
    lp = _log_probs(np.random.default_rng(0), 3)
    assert ctc_log_likelihood(lp[:2], "11") == -np.inf  # 1, blank, 1 needs three columns
    assert ctc_log_likelihood(lp, "11") > -np.inf
    assert ctc_log_likelihood(lp[:2], "12") > -np.inf
    assert ctc_log_likelihood(lp, "1234") == -np.inf


def test_prefix_beam_finds_the_likeliest_strings():
    rng = np.random.default_rng(3)
    lp = _log_probs(rng, 4)  # at most four digits fit
    beam = prefix_beam(lp, width=8)
    assert len(beam) == 8
    # exhaustive: every string of up to 4 digits that fits 7 columns
    import itertools

    every = {
        "".join(map(str, s)): ctc_log_likelihood(lp, "".join(map(str, s)))
        for n in range(5)
        for s in itertools.product(range(10), repeat=n)
    }
    best = max(every, key=every.get)
    assert best in beam and max(beam, key=beam.get) == best
    for text, score in beam.items():  # a beam keeps a share of each string's alignments
        assert score <= every.get(text, ctc_log_likelihood(lp, text)) + 1e-9


def _every_extension_beam(lp: np.ndarray, width: int) -> dict[str, float]:
    """The textbook prefix beam search, every beam extended by every digit at every column."""
    from digitlab.numbers.lines import _logaddexp

    beams = {"": (0.0, -np.inf)}
    for row in lp.tolist():
        nxt: dict[str, list[float]] = {}
        for prefix, (pb, pd) in beams.items():
            total = _logaddexp(pb, pd)
            entry = nxt.setdefault(prefix, [-np.inf, -np.inf])
            entry[0] = _logaddexp(entry[0], total + row[BLANK])
            for c in range(10):
                longer = nxt.setdefault(prefix + str(c), [-np.inf, -np.inf])
                if prefix and c == int(prefix[-1]):
                    entry[1] = _logaddexp(entry[1], pd + row[c])
                    longer[1] = _logaddexp(longer[1], pb + row[c])
                else:
                    longer[1] = _logaddexp(longer[1], total + row[c])
        ranked = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:width]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return {k: _logaddexp(*v) for k, v in beams.items()}


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_skips_only_strings_that_cannot_make_the_top(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (40, BLANK + 1))
    z[rng.random(40) < 0.7, BLANK] += 12  # most columns sure of blank, as a line model's are
    lp = z - np.log(np.exp(z).sum(1, keepdims=True))
    for width in (3, 8):
        want = _every_extension_beam(lp, width)
        assert list(prefix_beam(lp, width).items()) == list(want.items())


def test_line_image_scales_the_line_to_the_model_height(mnist):
    from digitlab.numbers.segment import locate
    from digitlab.preprocess import load_image

    test = mnist["test"]
    data, text, _ = synth.realistic_numbers(test.images, test.labels, 1, seed=5, min_len=4)[0]
    line = line_image(locate(load_image(data, max_side=1024)))
    assert line.dtype == np.uint8 and line.shape[0] == LINE_HEIGHT
    assert line.shape[1] % STRIDE == 0
    # about 22 px per digit height, so a digit and its gap take 10-30 px of width
    assert 10 * len(text) <= line.shape[1] <= 30 * len(text) + 8
    assert line.max() > 200 and line[:, :4].max() == 0  # ink inside, a blank margin


def test_a_line_too_wide_to_read_is_left_to_the_lattice():
    from PIL import Image

    from digitlab.numbers.segment import locate

    strip = Image.new("L", (20000, 100), 255)
    strip.paste(0, (0, 25, 20000, 75))  # one line 400 times as long as it is high
    layout = locate(strip)
    assert layout is not None and line_image(layout) is None


def test_the_bundled_model_has_a_line_model_and_it_reads_overlapping_digits_better(mnist):
    """On 60 touching numbers made from val digits, re-ranking with the line model reads at
    least as many exactly as the lattice alone, and more (measured: 800 val numbers of all
    kinds, 95.9% -> see docs/real-inputs-val.md)."""
    from digitlab.data.dataset import load_split
    from digitlab.numbers import read_number
    from digitlab.preprocess import load_image

    assert (BUNDLED_MODEL / LINE_FILE).is_file()
    predictor = Predictor(None)
    assert isinstance(predictor.line, LineReader)
    val = load_split("val")
    samples = synth.realistic_numbers(val.images, val.labels, 240, seed=4242)
    touching = [(d, t) for d, t, kind in samples if kind == "touching"]
    alone = with_line = 0
    for data, text in touching:
        img = load_image(data, max_side=1024)
        lattice_alone = read_number(img, predictor.piece_probabilities)
        alone += "".join(str(r.digit) for r in lattice_alone) == text
        readings = read_number(img, predictor.piece_probabilities, predictor.line)
        with_line += "".join(str(r.digit) for r in readings) == text
        assert all(r.confidence == r.probabilities[r.digit] for r in readings)
    assert with_line > alone


def test_rerank_takes_the_line_models_reading_only_where_the_lattice_can_spell_it(mnist):
    from digitlab.numbers.lattice import _spelled, best_path, lattice, rerank
    from digitlab.preprocess import load_image

    predictor = Predictor(None)
    test = mnist["test"]
    data, _, _ = synth.realistic_numbers(test.images, test.labels, 1, seed=21, min_len=3)[0]
    lat = lattice(load_image(data, max_side=1024))
    probs = predictor.piece_probabilities(lat.images)
    own = [int(probs[k, :10].argmax()) for k in best_path(lat, probs)]
    columns = lat.layout.ink.ink.shape[1] // 8

    def sure_of(digits: str) -> np.ndarray:  # a line model certain of ``digits``
        lp = np.full((columns, BLANK + 1), np.log(1e-6))
        lp[:, BLANK] = 0.0
        for k, c in enumerate(digits):
            lp[(k + 1) * columns // (len(digits) + 1), :] = np.log(1e-6)
            lp[(k + 1) * columns // (len(digits) + 1), int(c)] = 0.0
        return lp

    path0 = best_path(lat, probs)
    other = "".join(str((d + 1) % 10) for d in own)  # every digit changed: same pieces
    path, digits = rerank(lat, probs, path0, sure_of(other))
    assert "".join(map(str, digits)) == other and len(path) == len(own)
    runs = [lat.runs[k] for k in path]  # a cover of the line by pieces, left to right
    assert runs[0][0] == 0 and runs[-1][1] == lat.n_slices - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(runs, runs[1:], strict=False))
    # a string longer than any cover of the slices has no path, so it is no candidate
    logp = np.log(np.maximum(probs[:, :10], 1e-9))
    assert _spelled(lat, logp, "1" * (lat.n_slices + 1)) == (-np.inf, None)
    score, spelled = _spelled(lat, logp, "".join(map(str, own)))
    assert spelled == path0 and score == pytest.approx(logp[path0, own].sum())
    # a line model with too few columns for the lattice's reading has nothing to say
    assert rerank(lat, probs, path0, sure_of(other)[: len(own) - 1]) == (path0, own)


def test_train_line_writes_a_line_model_that_predict_uses(tmp_path, cli):
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, folder)
    (folder / LINE_FILE).unlink()
    r = cli("train-line", str(folder), "--lines", "300", "--set", "data.font_lines=60",
            "--epochs", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert "line model:" in r.stdout.decode() and "epoch 1/1" in r.stderr.decode()
    assert "(60 in fonts)" in r.stderr.decode()
    block = json.loads((folder / "model.json").read_text())["line"]
    assert block["file"] == LINE_FILE and block["epochs"] == 1 and block["val_lines"] >= 200
    fonts_used = f"60 of them in {len(TRAIN_FAMILIES)} handwriting fonts"
    assert block["val_font_lines"] == 2 and fonts_used in block["trained_on"]
    assert 0 <= block["val_sequence_accuracy"] <= 1
    assert (folder / LINE_FILE).stat().st_size < 600_000  # float16 weights
    reader = Predictor(folder).line
    assert isinstance(reader, LineReader)
    lp = reader.log_probs(np.zeros((LINE_HEIGHT, 64), np.uint8))
    assert lp.shape == (16, BLANK + 1) and np.allclose(np.exp(lp).sum(1), 1)


def test_a_broken_line_model_is_one_clear_error_when_the_model_is_loaded(tmp_path, cli, mnist):
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, folder)
    (folder / LINE_FILE).write_bytes(b"not an onnx file")
    test = mnist["test"]
    data, _, _ = synth.realistic_numbers(test.images, test.labels, 1, seed=3)[0]
    (tmp_path / "n.png").write_bytes(data)
    r = cli("predict", "--model", str(folder), "--number", "--json", str(tmp_path / "n.png"))
    assert r.returncode != 0 and r.stdout == b"" and b"Traceback" not in r.stderr
    (line,) = r.stderr.decode().strip().splitlines()
    assert "line.onnx" in line and "not a loadable line model" in line
    assert Predictor(folder, line=False).line is None  # the API can leave it out


def test_a_line_image_of_the_wrong_shape_is_refused():
    from digitlab.errors import DigitlabError

    reader = Predictor(None).line
    for bad in (np.zeros((28, 64), np.uint8), np.zeros((LINE_HEIGHT, 2), np.uint8)):
        with pytest.raises(DigitlabError, match="32 px high"):
            reader.log_probs(bad)


def test_train_line_refuses_a_folder_that_is_not_a_model(tmp_path, cli):
    r = cli("train-line", str(tmp_path))
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1
