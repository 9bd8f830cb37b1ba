"""Export to image folders and list files, the digit grid, and their CLI commands."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data.export import encode_png, export_split
from digitlab.data.formats import read_dataset
from digitlab.data.show import pick_digits, save_grid
from digitlab.errors import DigitlabError

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


def test_full_test_split_png_export_round_trips_bit_exactly(tmp_path, mnist):
    test = mnist["test"]
    report = export_split(test, tmp_path, "test", workers=2)
    assert report.count == 10000 and report.folder == tmp_path / "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "test.lst", "test.txt"]
    for source in (tmp_path / "test.txt", tmp_path / "test.lst", tmp_path / "test"):
        back = read_dataset(source)
        assert np.array_equal(back.images, test.images), source
        assert np.array_equal(back.labels, test.labels), source
    assert np.array_equal(read_dataset(tmp_path, "test").images, test.images)
    caffe = (tmp_path / "test.txt").read_text().splitlines()
    mxnet = (tmp_path / "test.lst").read_text().splitlines()
    assert caffe[:2] == ["test/000000_7.png 7", "test/000001_2.png 2"]
    assert mxnet[:2] == ["0\t7\ttest/000000_7.png", "1\t2\ttest/000001_2.png"]
    assert len(caffe) == len(mxnet) == 10000


def test_export_folder_with_any_split_name_reads_back_by_name(tmp_path, mnist):
    small = mnist["test"].subset(slice(0, 40))
    export_split(small, tmp_path, "digits")
    assert np.array_equal(read_dataset(tmp_path).images, small.images)
    export_split(small.subset(slice(0, 10)), tmp_path, "test")
    assert len(read_dataset(tmp_path, "test")) == 10
    with pytest.raises(DigitlabError, match="choose a split: digits, test"):
        read_dataset(tmp_path)


def test_png_encoder_is_bit_exact_for_any_gray_image():
    rng = np.random.default_rng(0)
    for shape in ((28, 28), (1, 1), (5, 300)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        with Image.open(io.BytesIO(encode_png(image))) as im:
            im.load()  # decoding verifies every chunk's CRC
            assert im.mode == "L" and np.array_equal(np.asarray(im), image)


def test_one_and_two_workers_write_identical_files(tmp_path, mnist):
    small = mnist["train"].subset(slice(0, 300))
    export_split(small, tmp_path / "a", "train", workers=1)
    export_split(small, tmp_path / "b", "train", workers=2)
    for a in (tmp_path / "a" / "train").iterdir():
        assert a.read_bytes() == (tmp_path / "b" / "train" / a.name).read_bytes()


def test_jpg_export_is_readable_and_close(tmp_path, mnist):
    small = mnist["test"].subset(slice(0, 500))
    export_split(small, tmp_path, "test", fmt="jpg")
    back = read_dataset(tmp_path / "test.lst")
    assert np.array_equal(back.labels, small.labels)
    assert np.abs(back.images.astype(int) - small.images).mean() < 2
    assert (tmp_path / "test" / "000000_7.jpg").is_file()


def test_reexport_replaces_an_earlier_export_but_not_a_foreign_folder(tmp_path, mnist):
    small = mnist["test"].subset(slice(0, 50))
    export_split(mnist["test"].subset(slice(0, 80)), tmp_path, "test", fmt="jpg")
    export_split(small, tmp_path, "test")
    assert len(list((tmp_path / "test").iterdir())) == 50
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "test" / "notes.txt").write_text("mine")
    with pytest.raises(DigitlabError, match="notes.txt, which is not from an export"):
        export_split(small, tmp_path, "test")
    assert (tmp_path / "test" / "notes.txt").read_text() == "mine"


def test_grid_shows_the_first_digits_or_a_seeded_sample(tmp_path, mnist):
    train = mnist["train"]
    assert pick_digits(train, 5).tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(pick_digits(train, 25, seed=3), pick_digits(train, 25, seed=3))
    assert not np.array_equal(pick_digits(train, 25, seed=3), pick_digits(train, 25, seed=4))
    out = save_grid(train, tmp_path / "grid.png", 25, seed=1)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 500


# ---------------------------------------------------------------------------- CLI


def _one_line_error(result, fragment: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert fragment in stderr


def test_cli_export_and_show_write_their_files(tmp_path, cli):
    result = cli("data", "export", "--split", "test", "--out", str(tmp_path), "--workers", "2")
    assert result.returncode == 0, result.stderr.decode()
    assert "wrote 10,000 images" in result.stdout.decode()
    assert len((tmp_path / "test.txt").read_text().splitlines()) == 10000
    grid = tmp_path / "grid.png"
    result = cli("data", "show", "--source", str(tmp_path / "test.txt"), "--n", "9",
                 "--out", str(grid))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert Image.open(grid).format == "PNG"


@pytest.fixture(scope="module")
def evil_pickle(tmp_path_factory) -> Path:
    class Payload:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path_factory.mktemp("evil") / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((Payload(), None, None))))
    return path


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["export", "--split", "nope", "--out", "{tmp}"], "unknown split 'nope'"),
        (["export", "--split", "test", "--out", "{tmp}", "--format", "gif"], "png or jpg"),
        (["export", "--split", "test"], "--out is required"),
        (["export", "--out", "{tmp}", "--workers", "0"], "workers must be at least 1"),
        (["export", "--out", "{tmp}/dir"], "dir/test exists and is not a folder"),
        (["export", "--out", "{tmp}/file"], "cannot create output folder"),
        (["export", "--out", "{tmp}", "--source", "{tmp}/none.npz"], "no such file or folder"),
        (["export", "--out", "{tmp}", "--source", "{evil}", "--split", "test"], "refused"),
        (["show", "--n", "0", "--out", "{tmp}/g.png"], "--n must lie between 1 and 400"),
        (["show", "--split", "val", "--n", "401", "--out", "{tmp}/g.png"], "between 1 and 400"),
        (["show", "--out", "{tmp}"], "is a folder"),
        (["show", "--out", "{tmp}/grid.jpg"], "ending in .png"),
        (["show", "--split", "valid", "--out", "{tmp}/g.png"], "unknown split 'valid'"),
        (["show", "--source", "{tmp}/file", "--out", "{tmp}/g.png"], "not a recognised"),
        (
            ["show", "--source", "{tmp}/dir/test", "--split", "val", "--out", "{tmp}/g.png"],
            "holds a single split",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, cli, evil_pickle, args, fragment):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "test").write_text("x")
    args = [a.format(tmp=tmp_path, evil=evil_pickle) for a in args]
    _one_line_error(cli("data", *args), fragment)
    assert not (tmp_path / "g.png").exists()
