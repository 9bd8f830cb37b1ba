"""`digitlab predict` with the bundled model on real files: the JSON contract, numbers,
rejection of non-digits, per-file errors, folders and stdin."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitlab import predict
from digitlab.artifact import BUNDLED_MODEL
from digitlab.predict import Predictor
from digitlab.preprocess import GIVE, MAX_IMAGE_BYTES
from digitlab.synth import uploads as synth

pytestmark = pytest.mark.skipif(
    not (BUNDLED_MODEL / "model.json").is_file(), reason="bundled model not built"
)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def paper_png(digit28: np.ndarray, size: int = 200, offset=(0, 0)) -> bytes:
    """A test digit drawn dark-on-white, larger, off-centre: what a user uploads."""
    big = Image.fromarray(255 - digit28).resize((size // 2, size // 2), Image.Resampling.BICUBIC)
    page = Image.new("L", (size, size), 255)
    page.paste(big, (size // 4 + offset[0], size // 4 + offset[1]))
    buf = io.BytesIO()
    page.save(buf, format="PNG")
    return buf.getvalue()


def test_bundled_model_is_small_and_documents_its_metrics():
    size = sum(p.stat().st_size for p in BUNDLED_MODEL.iterdir())  # weights, ONNX, line model
    assert size < 2_000_000
    meta = json.loads((BUNDLED_MODEL / "model.json").read_text())
    assert meta["line"]["val_sequence_accuracy"] >= 0.95
    assert meta["metrics"]["test_accuracy"] >= 0.99
    assert {"temperature", "threshold", "ece_before", "ece_after"} <= set(meta["rejection"])


@pytest.mark.slow
def test_json_contract_in_input_order_with_per_file_errors(tmp_path, cli, mnist):
    test = mnist["test"]
    files = []
    for i in range(3):
        p = tmp_path / f"d{i}.png"
        p.write_bytes(paper_png(test.images[i], offset=(20 * i - 20, 10)))
        files.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a picture")
    r = cli("predict", "--json", str(files[0]), str(bad), str(files[1]), str(tmp_path / "nope.png"),
            str(files[2]))  # fmt: skip
    assert r.returncode == 2  # some inputs failed
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [o["path"] for o in out] == [str(files[0]), str(bad), str(files[1]),
                                        str(tmp_path / "nope.png"), str(files[2])]  # fmt: skip
    # the path names the file once: the message does not start with a subject of its own
    assert out[1]["error"] == f"not an image Pillow can read; {GIVE}"
    assert "error" in out[3]
    for o, label in zip([out[0], out[2], out[4]], test.labels[:3], strict=True):
        assert set(o) == {"path", "digit", "confidence", "probabilities", "is_digit"}
        assert o["digit"] == label and o["is_digit"] is True
        assert len(o["probabilities"]) == 10 and 0 <= o["confidence"] <= 1


@pytest.mark.slow
def test_folders_stdin_and_show_input(tmp_path, cli, mnist):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(paper_png(mnist["test"].images[i]))
    shown = tmp_path / "seen"
    r = cli("predict", str(folder), "--json", "--show-input", str(shown))
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout.decode().splitlines()) == 4
    seen = sorted(shown.glob("*.png"))
    assert len(seen) == 4 and Image.open(seen[0]).size == (28, 28)
    r = cli("predict", "-", "--json", input=paper_png(mnist["test"].images[0]))
    assert json.loads(r.stdout)["digit"] == mnist["test"].labels[0]


def test_blank_noise_and_letters_are_not_digits(predictor):
    for data, kind in synth.non_digits(30, seed=5):
        r = predictor.predict_image(data)
        if kind.startswith("blank"):
            assert r["is_digit"] is False and r["digit"] is None, kind
    blank = io.BytesIO()
    Image.new("RGBA", (300, 300), (0, 0, 0, 0)).save(blank, format="PNG")
    r = predictor.predict_image(blank.getvalue())
    assert r == {**r, "digit": None, "is_digit": False}


def test_number_mode_reads_a_composed_number(predictor, mnist):
    # (seed 3's number, 4502, ends in a 2 with a detached tick under half a digit high that
    # the pieces read as a 1 at 0.97 and the line model too: it reads 45021)
    data, text, _ = synth.realistic_numbers(
        mnist["test"].images, mnist["test"].labels, 1, seed=4, min_len=4, max_len=4
    )[0]
    r = predictor.predict_image(data, number=True)
    assert r["number"] == text
    assert len(r["digits"]) == 4
    assert all(len(d["box"]) == 4 and d["box"][2] > 0 for d in r["digits"])
    xs = [d["box"][0] for d in r["digits"]]
    assert xs == sorted(xs)


@pytest.mark.slow
def test_number_mode_splits_touching_digits_and_merges_broken_ones(predictor, mnist):
    train = mnist["train"]
    samples = synth.realistic_numbers(train.images, train.labels, 80, seed=2024)
    right: dict[str, list[bool]] = {kind: [] for kind in synth.NUMBER_KINDS}
    for data, text, kind in samples:
        right[kind].append(predictor.predict_image(data, number=True)["number"] == text)
    separated = [ok for kind, oks in right.items() if kind != "touching" for ok in oks]
    assert np.mean(separated) >= 0.9  # measured 0.95-0.97 on 1,000 train-built numbers
    assert np.mean(right["touching"]) >= 0.75  # measured 0.89 (shape-only cuts: 0.27)


def test_number_mode_scores_all_candidate_pieces_in_one_model_call(predictor, mnist):
    from digitlab.numbers import read_number
    from digitlab.preprocess import load_image

    train = mnist["train"]
    data, text, _ = synth.realistic_numbers(
        train.images, train.labels, 4, seed=8, min_len=5, max_len=5
    )[3]  # the touching kind
    calls = []

    def counting(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return predictor.probabilities(images)

    readings = read_number(load_image(data, max_side=1024), counting)
    assert len(calls) == 1 and calls[0] > len(text)  # more candidates than digits, one batch
    assert "".join(str(r.digit) for r in readings) == text
    assert all(r.digit == int(r.probabilities[:10].argmax()) for r in readings)  # no line model


def test_number_pieces_are_scored_on_five_views_in_one_model_call(mnist, monkeypatch):
    """piece_probabilities without a line model: the mean over a piece and its four 1-px
    moves, as the ensemble's TTA shifts are, with one call of the model for all views of all
    pieces. With a line model (the bundled one has it) each piece is scored once."""
    from digitlab.models.ensemble import TTA_SHIFTS
    from digitlab.predict import PIECE_VIEWS, Predictor, shifted

    with_line = Predictor()
    assert with_line.line is not None
    pieces = mnist["test"].images[:7]
    assert np.array_equal(with_line.piece_probabilities(pieces), with_line.probabilities(pieces))
    predictor = Predictor(line=False)

    assert list(PIECE_VIEWS) == list(TTA_SHIFTS)
    one = np.zeros((1, 5, 5), np.uint8)
    one[0, 2, 2] = 9
    assert [tuple(np.argwhere(shifted(one, dx, dy)[0])[0]) for dx, dy in PIECE_VIEWS] == [
        (2, 2), (2, 3), (2, 1), (3, 2), (1, 2)  # (row, column): right, left, down, up
    ]  # fmt: skip
    by_hand = np.mean([predictor.probabilities(shifted(pieces, *v)) for v in PIECE_VIEWS], 0)
    calls = []
    real = predictor.probabilities
    monkeypatch.setattr(predictor, "probabilities", lambda x: calls.append(len(x)) or real(x))
    averaged = predictor.piece_probabilities(pieces)
    assert calls == [35] and np.allclose(averaged, by_hand, atol=1e-6)
    assert np.abs(averaged - real(pieces)).max() > 1e-5  # the moves change the vote


@pytest.mark.slow
def test_number_mode_cli_contract(tmp_path, cli, mnist):
    data, text, _ = synth.realistic_numbers(
        mnist["test"].images, mnist["test"].labels, 1, seed=11, min_len=2, max_len=2
    )[0]
    p = tmp_path / "n.png"
    p.write_bytes(data)
    r = cli("predict", "--number", "--json", str(p))
    o = json.loads(r.stdout)
    assert set(o) == {"path", "number", "digits"} and o["number"] == text
    assert all(set(d) == {"digit", "confidence", "is_digit", "box"} for d in o["digits"])


def _reading(digit: int, confidence: float):
    from digitlab.numbers.lattice import Reading
    from digitlab.numbers.segment import Segment

    probs = np.full(11, (1 - confidence) / 10, np.float32)
    probs[digit] = confidence
    segment = Segment((10 * digit, 0, 8, 12), np.zeros((28, 28), np.uint8))
    return Reading(segment, probs, digit, confidence)


def test_a_number_is_read_when_its_digits_are_confident_on_average():
    from digitlab.predict import number_result

    one_doubt = number_result([_reading(2, 0.99), _reading(0, 0.4), _reading(7, 0.98)], 0.6)
    assert one_doubt["number"] == "207"
    assert [d["is_digit"] for d in one_doubt["digits"]] == [True, False, True]
    assert one_doubt["digits"][1] == {
        "digit": 0, "confidence": 0.4, "is_digit": False, "box": [0, 0, 8, 12]
    }  # fmt: skip
    mostly_not = number_result([_reading(1, 0.9), _reading(4, 0.3), _reading(7, 0.3)], 0.6)
    assert mostly_not["number"] is None
    assert [d["digit"] for d in mostly_not["digits"]] == [1, None, None]
    assert number_result([], 0.6) == {"number": None, "digits": []}


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"",
        lambda: b"GIF89a-not-really",
        lambda: _png(Image.new("L", (64, 64), 255))[:60],  # truncated PNG
        lambda: _png(Image.new("1", (30000, 30000), 0)),  # decompression bomb
    ],
    ids=["empty", "non-image", "truncated-png", "bomb"],
)
@pytest.mark.slow
def test_bad_files_give_one_error_entry_and_exit_2(tmp_path, cli, make):
    p = tmp_path / "x.png"
    p.write_bytes(make())
    r = cli("predict", "--json", str(p), timeout=60)
    assert r.returncode == 2
    o = json.loads(r.stdout)
    assert set(o) == {"path", "error"}
    assert "Traceback" not in r.stderr.decode()


@pytest.mark.slow
def test_an_undecodable_list_file_is_one_error_entry_and_empty_inputs_one_error_line(
    tmp_path, cli, mnist
):
    garbage = tmp_path / "list.txt"
    garbage.write_bytes(bytes(range(128, 256)) * 3)  # not UTF-8
    good = tmp_path / "good.png"
    good.write_bytes(paper_png(mnist["test"].images[0]))
    r = cli("predict", "--json", str(garbage), str(good), timeout=60)
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()
    assert out[0] == {"path": str(garbage), "error": out[0]["error"]}
    assert "cannot read the list file: not UTF-8" in out[0]["error"]
    assert out[1]["path"] == str(good) and out[1]["digit"] == mnist["test"].labels[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "none.lst").write_text("")
    for args, message in [
        ((str(garbage),), "list.txt: error: cannot read the list file"),
        ((str(empty),), "no images found in"),
        ((str(tmp_path / "none.lst"), str(empty)), "no images found in"),
    ]:
        r = cli("predict", *args, timeout=60)
        err = r.stderr.decode()
        assert r.returncode == 2 and r.stdout == b""
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "img",
    [Image.new("L", (1, 1), 0), Image.new("L", (20000, 10), 255)],
    ids=["1x1", "20000x10-strip"],
)
def test_degenerate_images_get_a_sensible_answer(predictor, img):
    r = predictor.predict_image(_png(img))
    assert r["is_digit"] is False and r["digit"] is None


def test_animated_gif_and_cmyk_jpeg_are_read(predictor, mnist):
    digit = Image.fromarray(255 - mnist["test"].images[0]).resize((112, 112))
    frames = [digit, Image.new("L", (112, 112), 128)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert predictor.predict_image(buf.getvalue())["digit"] == mnist["test"].labels[0]
    buf = io.BytesIO()
    digit.convert("CMYK").save(buf, format="JPEG", quality=95)
    assert predictor.predict_image(buf.getvalue())["digit"] == mnist["test"].labels[0]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("height_over_width", "digit"), [(1.5, 0), (1.83, 0), (1.0, None)])
def test_a_smooth_oval_drawn_on_the_pad_is_a_zero_and_a_circle_is_not(
    predictor, height_over_width, digit
):
    # what the drawing page sends for tests/serve/test_page.py's ZERO: a mouse path of 24
    # straight moves, dark strokes 280/14 px wide with round joins, on a white 280x280 canvas
    img = Image.new("RGB", (280, 280), "white")
    ry = 0.33 * 280
    rx = ry / height_over_width
    turn = [2 * math.pi * t / 24 for t in range(25)]
    path = [(140 + rx * math.sin(a), 140 - ry * math.cos(a)) for a in turn]
    ImageDraw.Draw(img).line(path, fill="#111", width=20, joint="curve")
    data = io.BytesIO()
    img.save(data, format="PNG")
    r = predictor.predict_image(data.getvalue())
    assert r["digit"] == digit, r["confidence"]


# ----------------------------------------- reliability: nothing hangs, one bad input, one entry


@pytest.mark.slow
def test_fifos_devices_and_oversize_files_are_per_file_errors_not_hangs(tmp_path, cli, mnist):
    """A FIFO given directly, found in a folder or named in a list file, /dev/zero, an
    oversize (sparse) file and a FIFO posing as a list file: each is one error entry, the
    good images around them are answered, and the whole run ends (timeout: a hang fails)."""
    good = tmp_path / "good.png"
    good.write_bytes(paper_png(mnist["test"].images[0]))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_bytes(paper_png(mnist["test"].images[1]))
    os.mkfifo(folder / "b.png")
    os.mkfifo(tmp_path / "direct.png")
    os.mkfifo(tmp_path / "names.txt")
    with open(tmp_path / "huge.png", "wb") as fh:
        fh.truncate(MAX_IMAGE_BYTES + 1)
    listed = tmp_path / "list.txt"
    listed.write_text(f"{folder / 'b.png'}\n/dev/zero\n{good}\n")
    args = [good, tmp_path / "direct.png", "/dev/zero", folder, tmp_path / "huge.png",
            tmp_path / "names.txt", listed]  # fmt: skip
    start = time.monotonic()
    r = cli("predict", "--json", *map(str, args), timeout=60)
    assert time.monotonic() - start < 30
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    fifo, device = "is a FIFO (named pipe), not a regular image file", "is a character device"
    expected = [
        (str(good), 7), (str(tmp_path / "direct.png"), fifo), ("/dev/zero", device),
        (str(folder / "a.png"), 2), (str(folder / "b.png"), fifo),
        (str(tmp_path / "huge.png"), f"at most {MAX_IMAGE_BYTES:,} are read"),
        (str(tmp_path / "names.txt"), fifo),
        (str(folder / "b.png"), fifo), ("/dev/zero", device), (str(good), 7),
    ]  # fmt: skip
    assert [o["path"] for o in out] == [path for path, _ in expected]
    for o, (_, want) in zip(out, expected, strict=True):
        if isinstance(want, int):
            assert o["digit"] == want, o
        else:
            assert set(o) == {"path", "error"} and want in o["error"], o


@pytest.mark.slow
def test_stdin_of_dev_zero_is_read_only_up_to_the_byte_limit():
    with open("/dev/zero", "rb") as zero:
        r = subprocess.run(
            [sys.executable, "-m", "digitlab", "predict", "--json", "-"],
            stdin=zero,
            capture_output=True,
            timeout=60,
            env=os.environ.copy(),
        )
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()
    assert json.loads(r.stdout) == {
        "path": "-",
        "error": f"the image is over {MAX_IMAGE_BYTES:,} bytes, the most that is read",
    }


@pytest.mark.slow
def test_no_preprocess_reads_every_image_mode_and_one_bad_file_is_one_entry(tmp_path, cli, mnist):
    """--no-preprocess converts to L itself: a LAB TIFF (which Pillow cannot convert to L),
    CMYK, YCbCr, 16-bit, float and 1-bit files of one MNIST digit all read as that digit."""
    digit, label = mnist["test"].images[0], int(mnist["test"].labels[0])
    gray = Image.fromarray(digit)
    images = {
        "lab.tif": gray.convert("RGB").convert("LAB"),
        "cmyk.tif": gray.convert("CMYK"),
        "ycbcr.tif": gray.convert("RGB").convert("YCbCr"),
        "deep.png": Image.fromarray(digit.astype(np.uint16) * 257),
        "float.tif": Image.fromarray(digit.astype(np.float32) / 255, "F"),
        "plain.png": gray,
    }
    paths = []
    for name, img in images.items():
        img.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths.insert(2, str(tmp_path / "bad.png"))
    r = cli("predict", "--json", "--no-preprocess", *paths, timeout=60)
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()
    assert [o["path"] for o in out] == paths
    assert set(out[2]) == {"path", "error"}
    assert [o["digit"] for i, o in enumerate(out) if i != 2] == [label] * len(images)


def test_an_input_that_trips_a_bug_is_its_own_error_entry(predictor, tmp_path, mnist, monkeypatch):
    """Whatever goes wrong with one input, the others are still answered."""
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(paper_png(mnist["test"].images[i]))
    cursed = files[1].read_bytes()
    real = predict.model_input

    def model_input(data, preprocess, max_pixels):
        if data == cursed:
            raise RuntimeError("boom\nsecond line")
        return real(data, preprocess, max_pixels)

    monkeypatch.setattr(predict, "model_input", model_input)
    out = list(predictor.predict_paths([str(f) for f in files]))
    assert out[1] == {
        "path": str(files[1]),
        "error": "internal error (RuntimeError: boom second line); please report it",
    }
    assert [out[0]["digit"], out[2]["digit"]] == [mnist["test"].labels[0], mnist["test"].labels[2]]


def test_a_folder_read_in_worker_processes_gives_the_same_answers_in_order(
    predictor, tmp_path, mnist
):
    """predict_paths(workers=2): files read and preprocessed in two worker processes, the
    model run here; broken files and unlistable inputs keep their place, as with one."""
    images, labels = mnist["test"].images, mnist["test"].labels
    n = predict.BATCH + 40  # two chunks, so both workers have one
    paths = []
    for i in range(n):
        paths.append(str(tmp_path / f"{i:04d}.png"))
        Image.fromarray(images[i]).save(paths[-1])
    (tmp_path / "0003.png").write_bytes(b"not a png")
    paths.insert(7, predict.Unreadable(str(tmp_path / "list.txt"), "cannot list it"))
    shown = tmp_path / "shown"
    two = list(predictor.predict_paths(paths, workers=2, show_input=str(shown)))
    one = list(predictor.predict_paths(paths, workers=1))
    assert two == one and [r["path"] for r in two] == paths
    assert "error" in two[3] and two[7]["error"] == "cannot list it"
    right = [r["digit"] == labels[i] for i, r in enumerate(two[:7] + two[8:]) if i != 3]
    assert np.mean(right) >= 0.98
    assert len(list(shown.glob("*.png"))) == n - 1  # every image the model saw


def test_number_boxes_stay_inside_the_image(predictor, mnist):
    """Digits touching the right and bottom edges of a 1543x401 image (work scale: 1/3)."""
    images, labels = mnist["test"].images, mnist["test"].labels
    width, height = 1543, 401
    page = np.full((height, width), 255, np.uint8)
    x = width
    for i in (2, 1, 0):
        ink = Image.fromarray(255 - images[i]).crop(Image.fromarray(images[i]).getbbox())
        ink = np.asarray(ink.resize((ink.width * height // ink.height, height)))
        page[:, x - ink.shape[1] : x] = np.minimum(page[:, x - ink.shape[1] : x], ink)
        x -= ink.shape[1] + 20
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, "PNG")
    r = predictor.predict_image(buf.getvalue(), number=True)
    assert r["number"] == "".join(str(labels[i]) for i in range(3))
    for d in r["digits"]:
        x, y, w, h = d["box"]
        assert min(x, y) >= 0 and min(w, h) >= 1
        assert x + w <= width and y + h <= height, d["box"]
    assert max(d["box"][1] + d["box"][3] for d in r["digits"]) == height  # ink to the edge


# ----------------------------------------------------------------------------- fuzz

PREDICT_EXAMPLES = 150
FUZZ_MODES = [
    ("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "1"), ("PNG", "I;16"), ("JPEG", "RGB"),
    ("JPEG", "CMYK"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "F"), ("TIFF", "LAB"),
    ("TIFF", "YCbCr"), ("TIFF", "I;16"), ("WEBP", "RGBA"),
]  # fmt: skip


@st.composite
def fuzz_inputs(draw) -> tuple[str, bytes]:
    """(kind, bytes) of one input: an image of any mode, maybe damaged, or junk, or a
    list file of any bytes, or a FIFO, a device, a folder, a missing path."""
    kind = draw(st.sampled_from(["image"] * 5 + ["junk", "list", "fifo", "device", "dir", "none"]))
    if kind == "junk":
        return kind, draw(st.binary(max_size=1024))
    if kind == "list":
        names = st.sampled_from(["a.png", "missing.png", "/dev/zero", "pipe.png", "\0", "é"])
        text = "\n".join(draw(st.lists(names, max_size=4))).encode()
        return kind, text if draw(st.booleans()) else draw(st.binary(max_size=64))
    if kind != "image":
        return kind, b""
    fmt, mode = draw(st.sampled_from(FUZZ_MODES))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gray = np.full((h, w), 235, np.uint8)
    if draw(st.booleans()):
        gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    else:  # a few strokes, some touching the edges
        for _ in range(draw(st.integers(0, 4))):
            x, y = int(rng.integers(w)), int(rng.integers(h))
            gray[y : y + max(1, h // 2), x : x + max(1, w // 12)] = 15
    if mode == "F":
        arr = gray.astype(np.float32) / draw(st.sampled_from([1.0, 255.0]))
        for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3)):
            arr[rng.integers(h), rng.integers(w)] = value
        img = Image.fromarray(arr, "F")
    elif mode == "I;16":
        bits = draw(st.sampled_from([10, 12, 16]))
        img = Image.fromarray((gray.astype(np.uint32) * (2**bits - 1) // 255).astype(np.uint16))
    else:
        img = Image.fromarray(gray, "L").convert("RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    data = buf.getvalue()
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return kind, data


def _make_input(folder, i: int, kind: str, data: bytes) -> str:
    path = folder / f"{i:03d}.{'txt' if kind == 'list' else 'png'}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        return "/dev/zero"
    elif kind == "dir":
        path.mkdir()
    elif kind != "none":
        path.write_bytes(data)
    return str(path)


@pytest.mark.slow
@pytest.mark.timeout(600)  # a hang (a FIFO opened for reading) fails here, it does not stall
def test_fuzzed_inputs_each_get_one_clean_entry(predictor, tmp_path):
    """Hypothesis makes batches of 1-4 inputs of every kind; predict_paths answers each with
    one entry in order, digits and numbers in the contract with boxes inside the image, and
    errors that are user errors (never "internal error"). Then one CLI run over all the
    files made: no traceback, one JSON line per input."""
    from digitlab.predict import expand_inputs

    folder = tmp_path / "fuzz"
    folder.mkdir()
    (folder / "a.png").write_bytes(paper_png(np.zeros((28, 28), np.uint8)))
    os.mkfifo(folder / "pipe.png")
    made: list[str] = []
    serial = itertools.count()  # every input gets a new name: a FIFO is never written to
    tally: dict[str, int] = {}

    @settings(max_examples=PREDICT_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(inputs=st.lists(fuzz_inputs(), min_size=1, max_size=4), number=st.booleans(),
           preprocess=st.booleans())  # fmt: skip
    def one_batch(inputs, number, preprocess):
        paths = [_make_input(folder, next(serial), *inp) for inp in inputs]
        made.extend(p for p in paths if p.startswith(str(folder)))
        expanded = expand_inputs(paths)
        out = list(predictor.predict_paths(expanded, number=number, preprocess=preprocess))
        assert [o["path"] for o in out] == list(expanded)
        for o in out:
            kind = "error" if "error" in o else "number" if number else "digit"
            tally[kind] = tally.get(kind, 0) + 1
            if "error" in o:
                assert "internal error" not in o["error"] and "\n" not in o["error"], o
            elif number:
                size = Image.open(o["path"]).size
                for d in o["digits"]:
                    x, y, w, h = d["box"]
                    assert min(x, y) >= 0 and x + w <= size[0] and y + h <= size[1], (d, size)
            else:
                assert 0 <= o["confidence"] <= 1 and math.isfinite(o["confidence"])

    one_batch()
    print(f"predict fuzz: {len(made)} files made, entries {tally}")
    assert sum(tally.values()) >= PREDICT_EXAMPLES and tally.get("digit", 0) >= 20
    assert tally.get("number", 0) >= 10, tally
    inputs = sorted(set(made) | {str(folder / "pipe.png"), "/dev/zero"})
    r = subprocess.run(
        [sys.executable, "-m", "digitlab", "predict", "--json", *inputs],
        capture_output=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr.decode()
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [o["path"] for o in out] == expand_inputs(inputs)
