"""The Python API: the README's examples run as written, on real files and a real run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digitlab
from digitlab.errors import DigitlabError

REPO = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _number_png(mnist, digits: str, path: Path) -> None:
    images, labels = mnist["test"].images, mnist["test"].labels
    tiles = [255 - images[np.flatnonzero(labels == int(d))[3]] for d in digits]
    line = np.full((56, 28 * len(tiles) + 40), 255, np.uint8)
    for i, t in enumerate(tiles):
        line[14:42, 20 + 28 * i : 48 + 28 * i] = t
    Image.fromarray(line).resize((line.shape[1] * 4, 224)).save(path)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "serve-screenshot.png").write_bytes(
        (REPO / "docs" / "serve-screenshot.png").read_bytes()
    )
    _number_png(mnist, "2026", tmp_path / "number.png")
    seven = mnist["test"].images[np.flatnonzero(mnist["test"].labels == 7)[0]]
    Image.fromarray(seven).save(tmp_path / "digit.png")
    scope: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), scope)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("None False")
    assert out[1].startswith("2026 [")
    assert scope["scores"].accuracy > 0.9 and scope["scores"].split == "test"
    assert Path(scope["onnx_file"]).is_file()
    assert (Path(scope["run"].run_dir) / "model.json").is_file()


def test_read_takes_paths_bytes_arrays_and_pil_images(mnist, tmp_path):
    seven = mnist["test"].images[np.flatnonzero(mnist["test"].labels == 7)[0]]
    png = tmp_path / "seven.png"
    Image.fromarray(255 - seven).save(png)
    readings = [
        digitlab.read(png),
        digitlab.read(str(png)),
        digitlab.read(png.read_bytes()),
        digitlab.read(255 - seven),
        digitlab.read(Image.fromarray(255 - seven)),
    ]
    assert {r.digit for r in readings} == {7} and all(r.is_digit for r in readings)
    assert len(readings[0].probabilities) == 10


def test_read_number_gives_typed_digits_with_boxes(mnist, tmp_path):
    _number_png(mnist, "4096", tmp_path / "n.png")
    n = digitlab.read_number(tmp_path / "n.png")
    assert n.number == "4096" and [d.digit for d in n.digits] == [4, 0, 9, 6]
    assert all(len(d.box) == 4 and d.box[2] > 0 for d in n.digits)


def test_api_errors_are_digitlab_errors(tmp_path):
    with pytest.raises(DigitlabError, match="missing.png: cannot read the image .No such file"):
        digitlab.read(tmp_path / "missing.png")
    with pytest.raises(DigitlabError, match="uint8"):
        digitlab.read(np.zeros((28, 28), np.float32))
    with pytest.raises(DigitlabError, match="solver.lr"):
        digitlab.recipe("fast", solver__lr="fast")


def test_recipe_fields_are_typed_and_dotted_or_double_underscored():
    a = digitlab.recipe("fast", **{"solver.lr": 0.123})
    b = digitlab.recipe("fast", solver__lr=0.123, train__epochs=2)
    assert a.solver.lr == b.solver.lr == 0.123 and b.train.epochs == 2
